"""
The training losses (docs/method.md §4), one function each; the training scripts pass them to trainer.train.

  inner_loss   stage 1 (train_inner.py): each agent's INNER link learns to turn a last-layer state h_t into the input
               embedding of the next gold token:  L_in = mean over target positions t of 1 - cos(R_in(h_t), Emb(y_t+1)),
               teacher-forced on [the agent's round-1 prompt | its role's gold text y]
  outer_loss   stage 2 (train_outer.py): the whole system unrolled for r rounds, cross-entropy of the final agent's
               answer tokens (answer_ce); gradients reach the outer links through every round
  single_loss  the trained baselines (train_single.py): the final agent alone, answer cross-entropy, prompted as the
               single-agent baseline is

Teacher forcing puts the target after the prompt (append_targets): the state at position T-1+j predicts target token
j. A target longer than the budget is cut and gets no end token, so no model learns to stop where a cut falls.
"""
import torch
import torch.nn.functional as F

from recursion import build_inputs
from patterns import role_of, role_targets, slot_name
from rows import target_text

# stage 2 with --supervise all: the final round's answer CE + this weight x the mean CE of the earlier rounds; the
# release's weighting, small so the final round (the one that answers) dominates
EARLIER_ROUNDS_WEIGHT = 0.1


def append_targets(backbone, embeds, mask, texts, max_tokens, pad_to=None):
    """Teacher forcing: [prompt inputs | target text tokens + end token], right-padded.
    A target longer than max_tokens is cut there and gets NO end token: the model must not learn to stop mid-text.
    Returns embeds [B, T+L, d], mask [B, T+L], target ids [B, L] (pad where target_mask is 0), target_mask [B, L]."""
    eos = backbone.tokenizer.eos_token_id
    ids = [backbone.encode(t) for t in texts]
    ids = [x[:max_tokens] if len(x) > max_tokens else x + [eos] for x in ids]
    L = pad_to or max(len(x) for x in ids)
    tmask = torch.tensor([[1] * min(len(x), L) + [0] * (L - len(x)) for x in ids], device=mask.device)
    ids = torch.tensor([(x + [eos] * L)[:L] for x in ids], device=mask.device)
    return (torch.cat([embeds, backbone.embed(ids)], 1), torch.cat([mask, tmask], 1), ids, tmask)


def answer_ce(backbone, embeds, mask, answers, max_tokens, checkpoint=False):
    """Mean cross-entropy of the answer tokens (end token included) after the final agent's inputs."""
    T = embeds.shape[1]
    full, full_mask, ids, tmask = append_targets(backbone, embeds, mask, answers, max_tokens)
    if checkpoint:
        hidden = backbone.forward_checkpointed(full, full_mask)
    else:
        hidden, _ = backbone.forward(full, full_mask)
    logits = backbone.logits(hidden[:, T - 1:-1]).float()  # [B, L, V]: position T-1+j predicts target token j
    return F.cross_entropy(logits.flatten(0, 1), ids.masked_fill(tmask == 0, -100).flatten())


# ---- stage 1 -------------------------------------------------------------------------------------------------------

def stage1_prompt(system, i, row):
    """Agent i's round-1 prompt with each in-coming slot holding the sending agent's gold role text, as text (the
    slot -> field map is the role targets table: a critic's slot from the planner holds the row's `plan`), as the
    release's training prompts do, so the states the link learns to continue from are those of the loop.
    Feedback slots stay out: they open in round 2, and the only gold text for "what the last agent thought" is its
    own target (the answer), which would put the answer in the first agent's prompt."""
    texts = {slot_name(system.roles[s], fb): target_text(row, role_targets(system.roles[s]))
             for s, fb in system.incoming(i, round_=0)}  # round 0: within-round edges only
    return system.prompt(i, row["question"], round_=0, texts=texts)


def rows_of(role, rows):
    """The rows that train this agent: a mixture specialist's own domain, every row for the others."""
    domain = role_of(role).domain
    return rows if domain is None else [r for r in rows if r.get("domain") == domain]


def inner_loss(system, rows, max_tokens, agents=None):
    """agents: the indices of the agents whose inner links learn (default every agent)."""
    losses = []
    for i, (role, bb) in enumerate(zip(system.roles, system.backbones)):
        mine = rows_of(role, rows) if agents is None or i in agents else []
        if not mine:  # a specialist whose domain this batch missed, or an agent left out
            continue
        embeds, mask = build_inputs(bb, [stage1_prompt(system, i, r) for r in mine], {})  # no slots left
        T = embeds.shape[1]
        texts = [target_text(r, role_targets(role)) for r in mine]
        full, full_mask, ids, tmask = append_targets(bb, embeds, mask, texts, max_tokens)
        with torch.no_grad():
            hidden, _ = bb.forward(full, full_mask)
            target = bb.embed(ids)  # [B, L, d]: Emb(y_{t+1})
        pred = system.inner[role](hidden[:, T - 1:-1])  # [B, L, d]: R_in(h_t)
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)
        losses.append(((1 - cos) * tmask).sum() / tmask.sum())
    return sum(losses) / len(losses)


# ---- stage 2 -------------------------------------------------------------------------------------------------------

def teacher_latents(system, rows, n):
    """make_latents for --latents teacher: inner(hidden states over the agent's gold role text), its first n tokens
    (shorter texts padded with the end token, so every row sends n latents)."""
    def make(i, embeds, mask, round_):
        bb, role = system.backbones[i], system.roles[i]
        T = embeds.shape[1]
        texts = [target_text(r, role_targets(role)) for r in rows]
        full, _, _, tmask = append_targets(bb, embeds, mask, texts, n, pad_to=n)
        hidden, _ = bb.forward(full[:, :T + n], torch.cat([mask, torch.ones_like(tmask)], 1))
        return system.inner[role](hidden[:, T:T + n])  # [B, n, d]
    return make


def outer_loss(system, rows, args):
    """The answer CE after r rounds (args: rounds, latent_steps, latents, teacher_tokens, supervise,
    max_target_tokens, grad_ckpt); with --supervise all, + EARLIER_ROUNDS_WEIGHT x the earlier rounds' mean."""
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    make = teacher_latents(system, rows, args.teacher_tokens) if args.latents == "teacher" else None
    finals = system.latent_pass(questions, args.rounds, args.latent_steps, make_latents=make)
    bb = system.backbones[-1]
    if args.supervise == "final" or len(finals) == 1:
        return answer_ce(bb, *finals[-1], answers, args.max_target_tokens, args.grad_ckpt)
    ces = [answer_ce(bb, e, m, answers, args.max_target_tokens, args.grad_ckpt) for e, m in finals]
    return ces[-1] + EARLIER_ROUNDS_WEIGHT * torch.stack(ces[:-1]).mean()


# ---- the trained baselines -----------------------------------------------------------------------------------------

def single_loss(system, backbone, rows, max_tokens):
    """Answer cross-entropy of `backbone` (the tuned final agent), prompted as the single-agent baseline is."""
    prompts = [system.prompt(0, r["question"], 0, alone=True) for r in rows]  # the single baseline's prompt
    embeds, mask = build_inputs(backbone, prompts, {})
    return answer_ce(backbone, embeds, mask, [r["answer"] for r in rows], max_tokens)

"""
The looped multi-agent system: RecursiveMAS (agents pass latents) and, on the same loop, Recursive-TextMAS (agents
pass text) and the single-agent baseline.

One round = every agent once, in order. An agent reads the question plus whatever reaches its slots, then either
  - rolls out m latent thoughts (latent mode): h_t = last-layer state, e_t = inner(h_t) is fed back as the next input
    embedding, with the KV cache; the m thoughts [B, m, d] go through one outer link per out-going edge, or
  - writes text (text mode), which the next agent reads in the same slot,
and in the last round the final agent decodes the answer. A pattern is just WHO FEEDS WHOM (patterns.py).
agents.py asks it one question from the command line.
"""
import time

import torch
import torch.nn as nn

import fast
from checkpoints import load_system_links, save_system_links
from errors import UserError
from links import make_links
from loading import load_agents, pick_device, pick_dtype
from model import EagerDecoder, pad_left, slot
from patterns import base_role, expand_agents, role_of, slot_label, slot_name, topology, user_message
from protocol import FINAL_ANSWER
from tools import Search, answer_with_tools

# ----------------------------------------------------------------------------------------------------------------
# Latent rollout (docs/method.md §3): KV-cached, and the recompute-everything reference it must equal

def rollout(backbone, inner, embeds, mask, latent_steps, decoder=None):
    """embeds [B, T, d], mask [B, T] (left-padded) -> latent thoughts [B, m, d], m = latent_steps: e_t = inner(h_t),
    where h_1 is the prompt's last state and h_{t+1} the state after feeding e_t. One prefill, then one one-token
    step per thought, with the KV cache (decoder(backbone, B, L): model.EagerDecoder by default, or fast.choose's)."""
    dec = (decoder or EagerDecoder)(backbone, embeds.shape[0], mask.shape[1] + latent_steps)
    hidden = dec.start(embeds, mask)
    thoughts = []
    for t in range(latent_steps):
        e = inner(hidden[:, -1:])  # [B, 1, d]
        thoughts.append(e)
        if t < latent_steps - 1:
            hidden = dec.step(e)
    return torch.cat(thoughts, dim=1) if thoughts else embeds[:, :0]  # [B, m, d]


def rollout_recompute(backbone, inner, embeds, mask, latent_steps):
    """The released code's way: re-run the whole sequence at every step (O(m) full forwards). Reference and bench."""
    thoughts = []
    for t in range(latent_steps):
        hidden, _ = backbone.forward(embeds, mask)
        e = inner(hidden[:, -1:])
        thoughts.append(e)
        embeds = torch.cat([embeds, e], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.cat(thoughts, dim=1) if thoughts else embeds[:, :0]


def build_inputs(backbone, prompts, latents):
    """Rendered prompts (one per row) with slot markers + {slot: [B, m, d]} -> left-padded embeds [B, T, d] and
    mask [B, T]."""
    rows = []
    for b, text in enumerate(prompts):
        pieces = []
        for part in backbone.split_slots(text):
            if isinstance(part, str):
                if part not in latents:
                    raise KeyError(f"prompt has slot '{part}' but no latents were sent to it")
                pieces.append(latents[part][b])  # [m, d]
            elif part:
                pieces.append(backbone.embed(torch.tensor(part, device=backbone.device)))
        rows.append(torch.cat(pieces).to(backbone.dtype))
    return pad_left(rows, backbone.hidden_size, backbone.device)


# ----------------------------------------------------------------------------------------------------------------
# The system

class System(nn.Module):
    """Agents (frozen backbones, shared when they name the same model), their RecursiveLinks (the only trained
    parameters), and the loop. `fast` (fast.MODES) is this System's own choice of one-token decoder, per agent."""

    def __init__(self, agents, pattern="sequential", variant="2layer_ln_res", device="cpu", dtype=torch.float32,
                 trust_remote_code=False, spread=False, search_docs=None, tool_timeout=10.0, fast="auto"):
        super().__init__()
        self.agent_names, self.pattern, self.variant = list(agents), pattern, variant
        self.topology = topology(pattern, len(agents))
        self.roles, self.tool_timeout = self.topology.roles, tool_timeout
        self.search = Search(search_docs) if search_docs else None  # the tool-caller's local document collection
        self.backbones = load_agents(agents, device, dtype, trust_remote_code, spread)
        self.fast = [_fast_mode(fast, bb) for bb in self.backbones]
        self.inner, self.outer = make_links(self.roles, self.backbones, self.topology, variant)

    def incoming(self, i, round_):
        """Edges into agent i in this round: [(src, is_feedback)]; feedback arrives from round 2 on."""
        t = self.topology
        return [(s, False) for s, d in t.edges if d == i] + [(s, True) for s, d in t.feedback if d == i and round_ > 0]

    def prompt(self, i, question, round_, texts=None, alone=False):
        """Agent i's prompt: its role, the question (a list: one per agent), each incoming message in its slot (its
        text from `texts`, else a marker where build_inputs splices latents). alone: the single-agent baseline."""
        question = question[i] if isinstance(question, (list, tuple)) else question
        inbox = [] if alone else [(slot_label(self.roles[s]), (texts or {}).get(name, slot(name)))
                                  for s, fb in self.incoming(i, round_) for name in [slot_name(self.roles[s], fb)]]
        role = role_of(self.roles[i])
        return self.backbones[i].prompt([{"role": "system", "content": role.system},
                                         {"role": "user", "content": user_message(role, question, inbox, alone)}])

    def inputs(self, i, questions, round_, inbox, alone=False):
        """Agent i's input embeddings [B, T, d] and mask: its prompts, latents spliced into their slots."""
        texts = {k: v for k, v in inbox.items() if not torch.is_tensor(v)}
        prompts = [self.prompt(i, q, round_, {k: v[b] for k, v in texts.items()}, alone)
                   for b, q in enumerate(questions)]
        return build_inputs(self.backbones[i], prompts, {k: v for k, v in inbox.items() if torch.is_tensor(v)})

    def send(self, i, message, inbox, last_round):
        """Agent i's message along its edges (feedback too, but after the last round); latents via outer links."""
        t = self.topology
        for (s, d), fb in [(e, False) for e in t.edges] + ([] if last_round else [(e, True) for e in t.feedback]):
            if s == i:
                link = self.outer[f"{self.roles[s]}->{self.roles[d]}"]
                msg = link(message.to(self.backbones[d].device)) if torch.is_tensor(message) else message
                inbox[d][slot_name(self.roles[s], fb)] = msg  # [B, m, d_dst] or list[str]

    def loop(self, questions, rounds, speak):
        """r rounds, every agent once a round: speak(i, embeds, mask, round_) -> latents [B, m, d] or (texts, counts),
        sent on; up to the last round's final agent. Returns (the final agent's inputs per round, the Tally)."""
        last, inbox, finals, tally = len(self.roles) - 1, [{} for _ in self.roles], [], Tally(len(questions))
        for r in range(rounds):
            for i in range(last + 1):
                inputs = self.inputs(i, questions, r, inbox[i])
                if i == last:
                    finals.append(inputs)
                    if r == rounds - 1:
                        return finals, tally
                self.send(i, tally.add(self.roles[i], speak(i, *inputs, r)), inbox, last_round=r == rounds - 1)

    def latent_pass(self, questions, rounds, latent_steps, make_latents=None):
        """The loop in latent mode; returns the final agent's inputs per round: [(embeds, mask)] * rounds.
        make_latents(i, embeds, mask, round_) -> [B, m, d] replaces the rollout (teacher latents, gradient probe)."""
        return self.loop(questions, rounds, make_latents or self.thinker(latent_steps))[0]

    def thinker(self, latent_steps):
        return lambda i, embeds, mask, r: rollout(self.backbones[i], self.inner[self.roles[i]], embeds, mask,
                                                  latent_steps, fast.choose(self.fast[i]))

    @torch.no_grad()
    def run(self, questions, mode="latent", rounds=1, latent_steps=8, max_new_tokens=256, temperature=0.0, top_p=1.0,
            final_answer=0):
        """Answer questions in mode latent (RecursiveMAS), text (Recursive-TextMAS) or single (the final agent alone).
        One record per question: text, tokens {role: n}, latent_steps, seconds (the batch's), written, continued."""
        _check(questions, mode)
        t0, last, gen = now(), len(self.roles) - 1, dict(max_new_tokens=max_new_tokens, temperature=temperature,
                                                         top_p=top_p)
        write = lambda i, e, m, r: self.backbones[i].generate(e, m, decoder=fast.choose(self.fast[i]), **gen)
        if mode == "single":
            finals, tally = [self.inputs(last, questions, 0, {}, alone=True)], Tally(len(questions))
        else:
            finals, tally = self.loop(questions, rounds, self.thinker(latent_steps) if mode == "latent" else write)
        texts, counts, calls, continued = self.answer(last, *finals[-1], gen, final_answer)
        tally.add(self.roles[last], (texts, counts))
        return tally.records(texts, now() - t0, continued, calls)

    def answer(self, i, embeds, mask, gen, final_answer=0):
        """(texts, tokens, tool calls or None, continued): a tool-caller's answer_with_tools, else write_answer."""
        bb, gen = self.backbones[i], dict(gen, decoder=fast.choose(self.fast[i]))
        if base_role(self.roles[i]) == "toolcaller":
            return (*answer_with_tools(bb, embeds, mask, gen, self.search, self.tool_timeout), [False] * len(embeds))
        texts, counts, continued = write_answer(bb, embeds, mask, gen, final_answer)
        return texts, counts, None, continued

    def save_links(self, path, extra=None):
        save_system_links(self, path, extra)

    def load_links(self, path):
        return load_system_links(self, path)


class Tally:
    """What a run made, counted where it is made: latent steps, the tokens each role generated per question, and
    every text any agent wrote per question."""

    def __init__(self, rows):
        self.latent_steps, self.tokens, self.written = 0, [{} for _ in range(rows)], [[] for _ in range(rows)]

    def add(self, role, said):
        """Count an agent's message (latents [B, m, d], or (texts, token counts)); returns what is sent on."""
        if torch.is_tensor(said):
            self.latent_steps += said.shape[1]
            return said
        texts, counts = said
        for b, (t, n) in enumerate(zip(texts, counts)):
            self.tokens[b][role] = self.tokens[b].get(role, 0) + n
            self.written[b].append(t)
        return list(texts)

    def records(self, texts, seconds, continued, calls=None):
        return [dict(text=texts[b], tokens=self.tokens[b], latent_steps=self.latent_steps, seconds=seconds,
                     written=self.written[b], continued=continued[b], **({"tool_calls": calls[b]} if calls else {}))
                for b in range(len(texts))]


def write_answer(bb, embeds, mask, gen, final_answer=0):
    """Decode the answer after embeds [B, T, d] (left-padded, mask [B, T]); gen: Backbone.generate's options.
    final_answer > 0 (paper B.3): a row cut at its token budget (no end token) gets FINAL_ANSWER appended and writes
    at most `final_answer` more tokens after [prompt | cut text | FINAL_ANSWER]; its text is then cut text +
    FINAL_ANSWER + " " + that ending, and its tokens count both generations. Returns (texts, tokens, continued)."""
    texts, counts, ended = bb.generate(embeds, mask, with_end=True, **gen)
    cut = [b for b, e in enumerate(ended) if not e] if final_answer else []
    if cut:
        rows = [torch.cat([embeds[b, mask[b].bool()],  # the prompt as this row read it, unpadded
                           bb.embed(torch.tensor(bb.encode(texts[b] + FINAL_ANSWER), device=bb.device))])
                for b in cut]
        ending, more = bb.generate(*pad_left(rows, bb.hidden_size, bb.device), **dict(gen, max_new_tokens=final_answer))
        texts, counts = list(texts), list(counts)
        for b, t, k in zip(cut, ending, more):
            texts[b], counts[b] = f"{texts[b]}{FINAL_ANSWER} {t}", counts[b] + k
    return texts, counts, [b in cut for b in range(len(texts))]


def _check(questions, mode):
    if not questions or any(not q or (isinstance(q, str) and not q.strip()) for q in questions):
        raise UserError("empty question; pass a non-empty --question")
    if mode not in ("latent", "text", "single"):
        raise UserError(f"unknown mode '{mode}'; use latent, text or single")


def _fast_mode(mode, backbone):
    if mode not in fast.MODES:
        raise UserError(f"unknown --fast '{mode}'; use one of {', '.join(fast.MODES)}")
    return fast.resolve_mode(mode, backbone)  # "auto": static KV cache + CUDA graph on CUDA for supported models


def now():
    """Wall-clock seconds, after the GPU has finished what it was given (timings of whole runs)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def system_from_args(a):
    """The System that cli.add_system_args' options describe, with its --links loaded."""
    dev = pick_device(a.device)
    names, pattern = expand_agents(a.agents, a.pattern)
    system = System(names, pattern, a.link_variant, dev, pick_dtype(a.dtype, dev), a.trust_remote_code, a.spread,
                    a.search_docs, a.tool_timeout, a.fast)
    if a.links:
        system.load_links(a.links)
    return system

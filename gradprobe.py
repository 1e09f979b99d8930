"""
The gradient probe (the paper's Theorem 4.1, docs/method.md §5): a gradient through a RecursiveLink keeps its norm,
while a text hand-over (a next-token distribution softmax(W_lm h / T) over the vocabulary, then the expected input
embedding) shrinks it when that distribution is confident.

What is compared. Every hand-over in the system reads a LAST-LAYER state h of the sender (the state Backbone.forward
returns: HF's last_hidden_state, which is taken after the decoder's final norm, so the LM head alone turns it into
the model's own logits) and gives the receiver an input embedding:

  links   an agent's own next input is inner(h); its message to the next agent is outer(inner(h)) (the method)
  text    an agent's own next input AND its message are text(h) = softmax(logits(h) / T) @ E_in: a differentiable
          text MAS, every hand-over (within an agent and between agents) a soft token

Agent 1's round-1 last-layer states H [B, m, d] (the m states its rollout reads) are made a leaf; the system then
runs r rounds with one kind of hand-over everywhere (System.latent_pass, losses.answer_ce), and we read the norm
of d(final agent's answer CE)/dH. Link kinds: 'zero' (the code's default: residual branches start at zero),
'kaiming' (the same links with their W1, W2 drawn Kaiming-normal: the theorem's premise), 'trained' (the system's
own links, when a checkpoint was loaded). The text hand-over's distribution on H is reported too (entropy, max
probability): the theorem's premise is a confident one. bench.py's part 5:

    python bench.py --grad-agents smollm,smollm --skip e2e,rollout,train,step --rounds 3 --grad-temperature 1,0.1
"""
import contextlib
import copy
import math

import torch
import torch.nn as nn

from recursion import rollout
from losses import answer_ce


class TextHandover(nn.Module):
    """A text hand-over made differentiable: the sender's last-layer states h [B, m, d_src] -> softmax(logits_src(h)
    / T) @ E_dst [B, m, d_dst], the expected input embedding of the receiver under the sender's next-token
    distribution. h is post-final-norm (Backbone.forward), so logits_src(h) is the LM head applied to h (with the
    model's logit soft-capping, where its config has one): the model's own logits (tests/test_bench.py)."""

    def __init__(self, src, dst, temperature):
        super().__init__()
        self.src, self.dst, self.temperature = src, dst, temperature

    def distribution(self, h):
        logits = self.src.logits(h.to(self.src.device)).float()  # [B, m, V]
        cap = getattr(self.src.config, "final_logit_softcapping", None)
        if cap:  # Gemma-2/3: the model caps its logits after the LM head
            logits = torch.tanh(logits / cap) * cap
        return torch.softmax(logits / self.temperature, dim=-1)

    def forward(self, h):
        p = self.distribution(h)
        emb = self.dst.model.get_input_embeddings()
        E = emb.weight  # [V, d_dst]
        if hasattr(emb, "embed_scale"):  # Gemma scales its embeddings in forward
            E = E * torch.as_tensor(emb.embed_scale, dtype=E.dtype, device=E.device)
        return p.to(E.device, E.dtype) @ E


class LinkHandover(nn.Module):
    """The method's hand-over from a last-layer state: outer(inner(h)), the sender's thought sent on."""

    def __init__(self, inner, outer):
        super().__init__()
        self.inner, self.outer = inner, outer

    def forward(self, h):
        return self.outer(self.inner(h))


def same_vocab(src, dst):
    """A text hand-over needs the sender's LM head and the receiver's embeddings over one vocabulary."""
    rows = src.model.get_output_embeddings().weight.shape[0], dst.model.get_input_embeddings().weight.shape[0]
    return src is dst or (src.tokenizer.get_vocab() == dst.tokenizer.get_vocab() and rows[0] == rows[1])


def rollout_states(backbone, feed, embeds, mask, steps):
    """recursion.rollout with `feed` as the next-input map; returns the m last-layer states it read [B, m, d] (h_1 = the
    prompt's last state, h_{t+1} = the state after feeding feed(h_t)), not the fed embeddings."""
    states = []

    def record(h):
        states.append(h)
        return feed(h)
    rollout(backbone, record, embeds, mask, steps)
    return torch.cat(states, dim=1)


def reinit(link, how, seed=0):
    """A copy of `link` initialised afresh: 'zero' = the code's default (links.RecursiveLink: residual branch zero),
    'kaiming' = the same with W1 and W2 Kaiming-normal (fan-in, ReLU gain) and zero biases; W3 and the LayerNorms
    as at the default. Drawn on the CPU from a fixed seed (the global generators untouched), so every run and every
    device draws the same links."""
    device, dtype = link.W1.weight.device, link.W1.weight.dtype
    link = copy.deepcopy(link).to("cpu", torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in link.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()
        link._init_near_identity()
        if how == "kaiming":
            for w in (link.W1, link.W2):
                if w is not None:
                    nn.init.kaiming_normal_(w.weight, nonlinearity="relu")
                    nn.init.zeros_(w.bias)
    return link.to(device, dtype)


@contextlib.contextmanager
def handovers(system, make):
    """Within the block every outer link 's->d' is replaced by make(s, d) (a map from the sender's last-layer
    states); put back afterwards, also on error."""
    saved = dict(system.outer.items())
    try:
        for name in saved:
            s, d = name.split("->")
            system.outer[name] = make(s, d)
        yield
    finally:
        for name, link in saved.items():
            system.outer[name] = link


class _Watch(nn.Module):
    """A hand-over that keeps the message it makes from `leaf` (agent 1's round-1 states), to read its gradient."""

    def __init__(self, handover, leaf, out):
        super().__init__()
        self.handover, self.leaf, self.out = handover, leaf, out

    def forward(self, h):
        y = self.handover(h)
        if h is self.leaf[0]:
            self.out.append(y)
        return y


def first_states_grad(system, questions, answers, rounds, steps, feed, handover, max_tokens=64):
    """(d(final agent's answer CE)/dH, H, gain, scale): H [B, m, d_1] = agent 1's round-1 last-layer states, made a
    leaf; every agent rolls out with feed[role] as its next-input map and every message is handover(src_role,
    dst_role)(states). gain = |dCE/dH| / |dCE/dM|, M = the messages made from H: what the hand-over itself does to
    the gradient that reaches it; scale = |M| / |H|, what it does to the signal going forward (a map that only
    rescales has gain = scale). (None,) * 4 when no hand-over follows H (one agent, one round)."""
    leaf, roles, msgs = [], system.roles, []

    def make(i, embeds, mask, round_):
        bb, f = system.backbones[i], feed[roles[i]]
        if (i, round_) != (0, 0):
            return rollout_states(bb, f, embeds, mask, steps)
        with torch.no_grad():
            leaf.append(rollout_states(bb, f, embeds, mask, steps).requires_grad_(True))
        return leaf[0]
    with handovers(system, lambda s, d: _Watch(handover(s, d), leaf, msgs)):
        finals = system.latent_pass(questions, rounds, steps, make_latents=make)
        if not leaf:
            return None, None, None, None
        loss = answer_ce(system.backbones[-1], *finals[-1], answers, max_tokens)
        g, *gm = torch.autograd.grad(loss, [leaf[0], *msgs])
        if not msgs:  # H was moved to another device on its way: no message seen
            return g.float(), leaf[0], None, None
        norms = lambda ts: math.sqrt(sum(x.float().norm().item() ** 2 for x in ts))
        g, gm = g.float(), norms(gm)
        gain = g.norm().item() / gm if gm > 0 else None  # None: no gradient reaches M (a saturated softmax)
        return g, leaf[0], gain, norms(msgs) / leaf[0].float().norm().item()


def link_paths(system, trained):
    """{kind: (inner links by role, outer links by name)}: fresh default ('zero') and Kaiming-normal copies of the
    system's links, and the system's own ('trained') when `trained`."""
    paths = {how: ({r: reinit(l, how) for r, l in system.inner.items()},
                   {n: reinit(l, how) for n, l in system.outer.items()}) for how in ("zero", "kaiming")}
    if trained:
        paths["trained"] = (dict(system.inner.items()), dict(system.outer.items()))
    return paths


def entropy_stats(p):
    """Mean entropy (nats) and mean max probability of distributions p [..., V]."""
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    return ent.mean().item(), p.max(-1).values.mean().item()


def grad_probe(system, questions, answers, rounds_list, steps, temperatures, trained=False):
    """Per number of rounds r and text temperature T: the norm of the answer CE's gradient on agent 1's round-1
    last-layer states through the text hand-over and through each kind of link (link_paths), the ratios text/link,
    and the entropy / max probability of the text hand-over's distribution on those states."""
    bb = {role: b for role, b in zip(system.roles, system.backbones)}
    text_ok = all(same_vocab(bb[n.split("->")[0]], bb[n.split("->")[1]]) for n in system.outer)
    paths, rows = link_paths(system, trained), []
    for r in rounds_list:
        links, per_step, gains, scales = {}, {}, {}, {}
        for kind, (inner, outer) in paths.items():
            link = lambda s, d: LinkHandover(inner[s], outer[f"{s}->{d}"])
            g, _, gains[kind], scales[kind] = first_states_grad(system, questions, answers, r, steps, inner, link)
            if g is None:
                break
            links[kind], per_step[kind] = g.norm().item(), g.norm(dim=(0, 2)).tolist()
        if not links:
            print(f"  r={r}: skipped, agent 1 is the final agent and answers at once")
            continue
        for T in temperatures:
            row = dict(rounds=r, temperature=T, links=links, link_norm_per_step=per_step, link_gain=gains,
                       link_scale=scales)
            if not text_ok:
                row["text_skipped"] = "vocabularies differ; use the same backbone for every agent"
            else:
                feed = {role: TextHandover(bb[role], bb[role], T) for role in system.roles}
                text = lambda s, d: TextHandover(bb[s], bb[d], T)
                g, H, gain, scale = first_states_grad(system, questions, answers, r, steps, feed, text)
                with torch.no_grad():
                    ent, pmax = entropy_stats(feed[system.roles[0]].distribution(H))
                row.update(text_norm=g.norm().item(), text_norm_per_step=g.norm(dim=(0, 2)).tolist(),
                           text_gain=gain, text_scale=scale, text_entropy=ent, text_max_prob=pmax,
                           vocab=system.backbones[0].config.vocab_size,
                           text_over={k: g.norm().item() / v for k, v in links.items()})
            rows.append(row)
            print("  " + _grad_line(row), flush=True)
    return rows


def _grad_line(r):
    links = ", ".join(f"{k} link {v:.3e}" for k, v in r["links"].items())
    text = r.get("text_skipped") or (f"text (T={r['temperature']:g}) {r['text_norm']:.3e}, entropy "
                                     f"{r['text_entropy']:.2f} nats, max p {r['text_max_prob']:.2f}")
    return f"r={r['rounds']}: {links}; {text}"


def _g(x, w):
    return f"{x:{w}.2e}" if x is not None else f"{'-':>{w}}"


def grad_table(rows, agents):
    """|dCE/dH| per path, text/link ratios, each hand-over's own gain |dCE/dH| / |dCE/dM| and forward scale
    |M| / |H| (M: its messages), and the text distribution's entropy and max probability."""
    kinds = list(rows[0]["links"]) if rows else []
    print(f"\n{'grad norm, ' + agents:30} {'r':>2} {'T':>5} " + " ".join(f"{k:>9}" for k in kinds) + f" {'text':>9} "
          + " ".join(f"{'text/' + k:>12}" for k in kinds) + " " + " ".join(f"{'gain ' + k:>12}" for k in kinds)
          + f" {'gain text':>9} " + " ".join(f"{'scale ' + k:>13}" for k in kinds) + f" {'scale text':>10}"
          + f" {'H(p) nats':>9} {'max p':>6}")
    for r in rows:
        head = (f"{'':30} {r['rounds']:2d} {r['temperature']:5g} " + " ".join(f"{r['links'][k]:9.2e}" for k in kinds))
        gains = " ".join(_g(r["link_gain"][k], 12) for k in kinds)
        scales = " ".join(_g(r["link_scale"][k], 13) for k in kinds)
        if "text_norm" not in r:
            print(f"{head} {'-':>9} " + " ".join(f"{'-':>12}" for k in kinds) + f" {gains} {'-':>9} {scales}  "
                  f"text skipped: {r['text_skipped']}")
            continue
        print(f"{head} {r['text_norm']:9.2e} " + " ".join(f"{r['text_over'][k]:12.2e}" for k in kinds) + f" {gains} "
              f"{_g(r['text_gain'], 9)} {scales} {_g(r['text_scale'], 10)} {r['text_entropy']:9.2f} "
              f"{r['text_max_prob']:6.2f}")
    if rows and "vocab" in rows[0]:
        print(f"{'':30} (H: agent 1's round-1 last-layer states; gain = |dCE/dH| / |dCE/dM|, scale = |M| / |H|, "
              f"M: the messages made from H; a uniform distribution over the {rows[0]['vocab']:,}-token vocabulary "
              f"has entropy {math.log(rows[0]['vocab']):.2f} nats)")

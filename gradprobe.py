"""
The gradient probe (the paper's Theorem 4.1): a gradient through a RecursiveLink keeps its norm, while a text
hand-over (softmax over the vocabulary, then the expected embedding of the next token) shrinks it.

Agent 1's round-1 latent thoughts [B, m, d] are made a leaf; the system then runs as in training (System.latent_pass,
train_outer.answer_ce) and we read the norm of d(final agent's answer CE)/d(those thoughts), twice: through the outer
links (the method), and with every outer link replaced by a TextHandover (same call, same place). bench.py's part 5:

    python bench.py --grad-agents smollm,smollm --skip e2e,rollout,train,step --rounds 1,2,3 --grad-temperature 1,0.1
"""
import argparse

import torch
import torch.nn as nn

from agents import rollout
from train_outer import answer_ce


class TextHandover(nn.Module):
    """A text hand-over made differentiable, called like an outer link: each thought h [B, m, d_src] ->
    softmax(logits_src(h) / T) @ E_dst [B, m, d_dst], the expected input embedding of the sender's next token."""

    def __init__(self, src, dst, temperature):
        super().__init__()
        self.src, self.dst, self.temperature = src, dst, temperature

    def forward(self, h):
        p = torch.softmax(self.src.logits(h.to(self.src.device)).float() / self.temperature, dim=-1)  # [B, m, V]
        E = self.dst.model.get_input_embeddings().weight  # [V, d_dst]
        return p.to(E.device, E.dtype) @ E


def same_vocab(src, dst):
    """A text hand-over needs the sender's LM head and the receiver's embeddings over one vocabulary."""
    rows = src.model.get_output_embeddings().weight.shape[0], dst.model.get_input_embeddings().weight.shape[0]
    return src is dst or (src.tokenizer.get_vocab() == dst.tokenizer.get_vocab() and rows[0] == rows[1])


def first_thoughts_grad(system, questions, answers, rounds, steps, max_tokens=64):
    """d(final agent's answer CE)/d(agent 1's round-1 thoughts) [B, m, d_1], those thoughts made a leaf; everything
    after them runs as in training (System.latent_pass, train_outer.answer_ce). None when no hand-over follows them."""
    leaf = []

    def make(i, embeds, mask, round_):
        bb, inner = system.backbones[i], system.inner[system.roles[i]]
        if (i, round_) != (0, 0):
            return rollout(bb, inner, embeds, mask, steps)
        with torch.no_grad():
            leaf.append(rollout(bb, inner, embeds, mask, steps).requires_grad_(True))
        return leaf[0]
    finals = system.latent_pass(questions, rounds, steps, make_latents=make)
    if not leaf:  # one agent, one round: it answers straight away
        return None
    loss = answer_ce(system.backbones[-1], *finals[-1], answers, max_tokens)
    return torch.autograd.grad(loss, leaf[0])[0]


def _grad_line(r):
    text = r.get("text_skipped") or (f"text (T={r['temperature']:g}) {r['text_norm']:.3e}, "
                                     f"ratio {r['text_over_link']:.2e}")
    return f"r={r['rounds']}: link {r['link_norm']:.3e}, {text}"


def grad_probe(system, questions, answers, rounds_list, steps, temperatures):
    """Norm of the gradient reaching agent 1's round-1 thoughts, through the outer links (the method) and through
    text-like hand-overs in their place, per number of rounds and temperature; plus the norm per step position."""
    t = system.topology
    pairs = {f"{system.roles[s]}->{system.roles[d]}": (system.backbones[s], system.backbones[d])
             for s, d in t.edges + t.feedback}
    text_ok = all(same_vocab(a, b) for a, b in pairs.values())
    links, rows = dict(system.outer.items()), []
    for r in rounds_list:
        g = first_thoughts_grad(system, questions, answers, r, steps)
        if g is None:
            print(f"  r={r}: skipped, agent 1 is the final agent and answers at once")
            continue
        base = dict(rounds=r, link_norm=g.float().norm().item(), link_norm_per_step=g.float().norm(dim=(0, 2)).tolist())
        for T in temperatures:
            row = dict(base, temperature=T)
            if not text_ok:
                row["text_skipped"] = "vocabularies differ; use the same backbone for every agent"
            else:
                try:
                    for name, (a, b) in pairs.items():
                        system.outer[name] = TextHandover(a, b, T)
                    gt = first_thoughts_grad(system, questions, answers, r, steps).float()
                finally:
                    for name, link in links.items():
                        system.outer[name] = link
                row.update(text_norm=gt.norm().item(), text_norm_per_step=gt.norm(dim=(0, 2)).tolist())
                row["text_over_link"] = row["text_norm"] / row["link_norm"]
            rows.append(row)
            print("  " + _grad_line(row), flush=True)
    return rows


def grad_table(rows, agents):
    print(f"\n{'grad norm, ' + agents:30} {'r':>2} {'T':>5} {'link':>10} {'text':>10} {'text/link':>10}")
    for r in rows:
        text = (f"{r['text_norm']:10.3e} {r['text_over_link']:10.2e}" if "text_norm" in r
                else f"skipped: {r['text_skipped']}")
        print(f"{'':30} {r['rounds']:2d} {r['temperature']:5g} {r['link_norm']:10.3e} {text}")


def temperatures(text):
    """--grad-temperature '1,0.1' -> [1.0, 0.1], each > 0 (an argparse type)."""
    try:
        ts = [float(x) for x in text.split(",")]
    except ValueError:
        ts = [0.0]
    if min(ts) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of positive numbers; pass e.g. 1,0.1")
    return ts

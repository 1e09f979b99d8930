"""
The latent channel, measured (scripts/capacity.py): how much a trained channel carries from agent 1 to the last
agent, and the controls that show it is the latents that carry it.

Training is the method's two stages (docs/method.md §4) on payload rows (tasks.py):
  train_sender  stage 1: the sender's inner link learns to turn each last-layer state into the embedding of the
                next token of the payload (losses.inner_loss, teacher-forced), so its rollout "says" the payload
                in latent form; once per payload family, whatever m
  train_reader  stage 2: the outer link learns, by the last agent's answer cross-entropy through one round of
                rollouts made exactly as at inference (losses.outer_loss), to hand those thoughts over so the last
                agent writes the payload; inner links frozen; once per number of latent steps m
read_back: agent 1 thinks once per held-out row (its m thoughts kept), then the last agent writes an answer from what
the channel hands it, under one of CONTROLS:
  trained   each row's own thoughts
  shuffled  the thoughts of another row, one with a different payload (partner): a channel that carries the payload
            now writes the partner's, so the row's own scores at chance
  zeroed    zeros instead of agent 1's thoughts: the outer link sends the same vectors for every row, so nothing
            about the payload arrives
Each answer is scored as a short answer, exact match (benchmarks.score); the partner's payload is kept to show where
a shuffled answer came from. Chance for a k-symbol payload is 1 / |alphabet|^k (tasks.bits).
"""
import argparse

import torch

import fast
import trainer
from benchmarks import score
from links import make_links
from losses import inner_loss, outer_loss
from recursion import rollout, write_answer

CONTROLS = ("trained", "shuffled", "zeroed")


def fresh_links(system, seed):
    """New, untrained links (the same for a given seed), so every run of a sweep starts from the same place."""
    torch.manual_seed(seed)
    system.inner, system.outer = make_links(system.roles, system.backbones, system.topology, system.variant)


def train_sender(system, rows, args, progress=None):
    """Stage 1 for agent 1 only (args: out, steps, lr, warmup, batch_size, seed, resume, ckpt_every,
    max_target_tokens; trainer.train); its target is each row's payload (the relay pattern's sender learns `final`).
    Returns the losses."""
    system.requires_grad_(False)
    params = list(system.inner[system.roles[0]].parameters())
    for p in params:
        p.requires_grad_(True)
    return trainer.train(system, params, lambda batch: inner_loss(system, batch, args.max_target_tokens, agents=[0]),
                         rows, args, progress=progress)


def train_reader(system, rows, m, args, progress=None):
    """Stage 2 with m latent steps, one round: the outer links learn, the inner links stay as stage 1 left them."""
    loss_args = argparse.Namespace(rounds=1, latent_steps=m, latents="rollout", teacher_tokens=0, supervise="final",
                                   max_target_tokens=args.max_target_tokens, grad_ckpt=False)
    system.requires_grad_(False)
    system.outer.requires_grad_(True)
    return trainer.train(system, list(system.outer.parameters()), lambda batch: outer_loss(system, batch, loss_args),
                         rows, args, progress=progress)


@torch.no_grad()
def thoughts_of(system, rows, m, batch_size):
    """Agent 1's m latent thoughts for each row, [N, m, d], made as at inference."""
    bb, inner, out = system.backbones[0], system.inner[system.roles[0]], []
    for start in range(0, len(rows), batch_size):
        embeds, mask = system.inputs(0, [r["question"] for r in rows[start:start + batch_size]], 0, {})
        out.append(rollout(bb, inner, embeds, mask, m, fast.choose(system.fast[0])))
    return torch.cat(out)


def partner(rows):
    """For each row, the index of a row with a different payload (half the list away, then onward): the rows whose
    thoughts it reads under the shuffled control."""
    n, out = len(rows), []
    for i, row in enumerate(rows):
        for step in range(n):
            j = (i + n // 2 + step) % n
            if rows[j]["final"] != row["final"]:
                out.append(j)
                break
        else:
            raise ValueError("the shuffled control needs rows with at least two different payloads")
    return out


def controlled(thoughts, control, partners):
    if control == "trained":
        return thoughts
    if control == "shuffled":
        return thoughts[partners]
    if control == "zeroed":
        return torch.zeros_like(thoughts)
    raise ValueError(f"unknown control {control!r}; use one of {', '.join(CONTROLS)}")


@torch.no_grad()
def read_back(system, rows, thoughts, control, max_new_tokens=24, batch_size=16):
    """The last agent's answers when agent 1's thoughts (thoughts_of) reach it under `control`; the agents in between
    (if any) think as usual. Returns one record per row: payload, the partner's payload, text, prediction, correct."""
    partners = partner(rows)
    sent = controlled(thoughts, control, partners)
    bb, last, recs = system.backbones[-1], len(system.roles) - 1, []
    think = system.thinker(thoughts.shape[1])
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        mine = sent[start:start + len(chunk)]
        make = lambda i, embeds, mask, r: mine if i == 0 else think(i, embeds, mask, r)
        finals = system.latent_pass([r["question"] for r in chunk], 1, thoughts.shape[1], make_latents=make)
        texts, _, _ = write_answer(bb, *finals[-1], dict(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0,
                                                          decoder=fast.choose(system.fast[last])))
        for j, (row, text) in enumerate(zip(chunk, texts)):
            pred, ok, _ = score({"kind": "qa", "gold": row["final"]}, text)
            recs.append(dict(payload=row["final"], partner=rows[partners[start + j]]["final"], text=text, pred=pred,
                             correct=bool(ok), k=row["k"], family=row["family"], control=control))
    return recs

"""
Stage 1 (docs/method.md §4, inner loop): each agent's INNER link learns to turn a last-layer hidden state into the
input embedding of the next ground-truth token, so that feeding R_in(h_t) back "continues the text" in latent space.

For agent i with role target y (planner <- plan, critic <- refined_plan, solver <- answer; patterns.ROLES), teacher-forced on
[role prompt | y]:   L_in = mean over target positions t of  1 - cos(R_in(h_t), Emb(y_{t+1}))

The prompt is the one the agent meets in round 1 of the loop, with the upstream agents' GOLD role texts written as text
where the loop puts their latents (the critic reads the planner's gold plan, the solver the critic's refined plan;
as the release's training prompts do), so the states the link learns to continue from are those of the loop.
A mixture specialist trains on the rows of its own domain only (rows.check_domains); every other agent on every row.

The backbone runs under no_grad (the inner link sits after it), so this stage is cheap. Agents are independent: they
may share a frozen backbone but each has its own link and target; their losses are averaged in one loop.

    python train_inner.py                          # SmolLM2 x2, GSM8K-derived rows, CPU, ~1 minute
    python train_outer.py --links runs/inner/links # then stage 2 starts from these inner links
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

import trainer
from agents import Parser, build_inputs, system_from_args
from patterns import TOPOLOGIES, expand_agents, role_of, role_targets, slot_name
from rows import DataError, check_domains, load_rows, target_text
from errors import UserError


def stage1_prompt(system, i, row):
    """Agent i's round-1 prompt with each in-coming slot holding the sending agent's gold role text, as text (the
    slot -> field map is the role targets table: a critic's slot from the planner holds the row's `plan`).
    Feedback slots stay out: they open in round 2, and the only gold text for "what the last agent thought" is its
    own target (the answer), which would put the answer in the first agent's prompt."""
    texts = {slot_name(system.roles[s], fb): target_text(row, role_targets(system.roles[s]))
             for s, fb in system.incoming(i, round_=0)}  # round 0: within-round edges only
    return system.prompt(i, row["question"], round_=0, texts=texts)


def rows_of(role, rows):
    """The rows that train this agent: a mixture specialist's own domain, every row for the others."""
    domain = role_of(role).domain
    return rows if domain is None else [r for r in rows if r.get("domain") == domain]


def inner_loss(system, rows, max_tokens):
    losses = []
    for i, (role, bb) in enumerate(zip(system.roles, system.backbones)):
        mine = rows_of(role, rows)
        if not mine:  # a specialist whose domain this batch missed
            continue
        embeds, mask = build_inputs(bb, [stage1_prompt(system, i, r) for r in mine], {})  # no slots left
        T = embeds.shape[1]
        texts = [target_text(r, role_targets(role)) for r in mine]
        full, full_mask, ids, tmask = trainer.append_targets(bb, embeds, mask, texts, max_tokens)
        with torch.no_grad():
            hidden, _ = bb.forward(full, full_mask)
            target = bb.embed(ids)  # [B, L, d]: Emb(y_{t+1})
        pred = system.inner[role](hidden[:, T - 1:-1])  # [B, L, d]: R_in(h_t)
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)
        losses.append(((1 - cos) * tmask).sum() / tmask.sum())
    return sum(losses) / len(losses)


def main(argv=None):
    p = Parser(description="Train the inner RecursiveLinks (stage 1), each agent on its role text.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter,
               epilog="example: python train_inner.py --agents smollm,smollm --steps 40")
    trainer.add_args(p, steps=40, lr=5e-4, batch=4)
    args = p.parse_args(argv)
    args.stage, args.out = "inner", args.out or os.path.join("runs", "inner")
    try:
        trainer.prepare_out(args)  # before loading anything: a wrong --out or --resume costs nothing
        names, pattern = expand_agents(args.agents, args.pattern)
        roles = TOPOLOGIES[pattern](len(names)).roles  # rows are checked before minutes of model loading
        rows = load_rows(args.data, "train", targets=[role_targets(r) for r in roles])
        check_domains(rows, [role_of(r).domain for r in roles], args.data)
        torch.manual_seed(args.seed)
        system = system_from_args(args)
        budget = trainer.target_budget(args, system)
        for role, bb in zip(system.roles, system.backbones):
            texts = [target_text(r, role_targets(role)) for r in rows_of(role, rows)]
            trainer.report_truncation(bb, texts, budget, role)
        system.outer.requires_grad_(False)
        trainer.train(system, system.inner.parameters(), lambda b: inner_loss(system, b, args.max_target_tokens),
                      rows, args)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Stage 1 (docs/method.md §4, inner loop): each agent's INNER link learns to turn a last-layer hidden state into the
input embedding of the next ground-truth token, so that feeding R_in(h_t) back "continues the text" in latent space.

For agent i with role target y (planner <- plan, critic <- refined_plan, solver <- answer; patterns.ROLES), teacher-forced on
[role prompt | y]:   L_in = mean over target positions t of  1 - cos(R_in(h_t), Emb(y_{t+1}))

The backbone runs under no_grad (the inner link sits after it), so this stage is cheap. Agents are independent: they
may share a frozen backbone but each has its own link and target; their losses are summed in one loop.

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
from patterns import role_targets, slot_name
from rows import DataError, load_rows, target_text
from model import UserError


def inner_loss(system, rows, max_tokens):
    total = 0.0
    for i, (role, bb) in enumerate(zip(system.roles, system.backbones)):
        prompts = [system.prompt(i, r["question"], round_=0) for r in rows]
        empty = {slot_name(system.roles[s], fb): torch.zeros(len(rows), 0, bb.hidden_size, device=bb.device)
                 for s, fb in system.incoming(i, 0)}  # each agent alone: its slots stay empty
        embeds, mask = build_inputs(bb, prompts, empty)
        T = embeds.shape[1]
        texts = [target_text(r, role_targets(role)) for r in rows]
        full, full_mask, ids, tmask = trainer.append_targets(bb, embeds, mask, texts, max_tokens)
        with torch.no_grad():
            hidden, _ = bb.forward(full, full_mask)
            target = bb.embed(ids)  # [B, L, d]: Emb(y_{t+1})
        pred = system.inner[role](hidden[:, T - 1:-1])  # [B, L, d]: R_in(h_t)
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)
        total = total + ((1 - cos) * tmask).sum() / tmask.sum()
    return total / len(system.roles)


def main(argv=None):
    p = Parser(description="Train the inner RecursiveLinks (stage 1), each agent on its role text.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter,
               epilog="example: python train_inner.py --agents smollm,smollm --steps 40")
    trainer.add_args(p, steps=40, lr=5e-4, batch=4)
    args = p.parse_args(argv)
    args.stage, args.out = "inner", args.out or os.path.join("runs", "inner")
    try:
        trainer.prepare_out(args)  # before loading anything: a wrong --out or --resume costs nothing
        torch.manual_seed(args.seed)
        system = system_from_args(args)
        rows = load_rows(args.data, "train", targets=[role_targets(r) for r in system.roles])
        budget = trainer.target_budget(args, system)
        for role, bb in zip(system.roles, system.backbones):
            trainer.report_truncation(bb, [target_text(r, role_targets(role)) for r in rows], budget, role)
        system.outer.requires_grad_(False)
        trainer.train(system, system.inner.parameters(), lambda b: inner_loss(system, b, args.max_target_tokens),
                      rows, args)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Stage 1 (docs/method.md §4, inner loop): each agent's INNER link learns to turn a last-layer hidden state into the
input embedding of the next ground-truth token, so that feeding R_in(h_t) back "continues the text" in latent space.

For agent i with role target y (planner <- plan, critic <- refined_plan, solver <- answer; patterns.ROLES),
teacher-forced on [role prompt | y]:   L_in = mean over target positions t of 1 - cos(R_in(h_t), Emb(y_{t+1}))
(losses.inner_loss).

The prompt is the one the agent meets in round 1 of the loop, with the upstream agents' GOLD role texts written as text
where the loop puts their latents (the critic reads the planner's gold plan, the solver the critic's refined plan;
as the release's training prompts do), so the states the link learns to continue from are those of the loop.
A mixture specialist trains on the rows of its own domain only (rows.check_domains); every other agent on every row.

The backbone runs under no_grad (the inner link sits after it), so this stage is cheap. Agents are independent: they
may share a frozen backbone but each has its own link and target; their losses are averaged in one loop.

    python train_inner.py                          # SmolLM2 x2, GSM8K-derived rows, CPU, ~1 minute
    python train_outer.py --links runs/inner/links # then stage 2 starts from these inner links
"""
import os
import sys

import torch

import cli
import trainer
from recursion import system_from_args
from checkpoints import prepare_out
from losses import inner_loss, rows_of
from patterns import expand_agents, role_of, role_targets, topology
from rows import check_domains, load_rows, target_text


def parser():
    p = cli.Parser(description="Train the inner RecursiveLinks (stage 1), each agent on its role text.",
                   epilog="example: python train_inner.py --agents smollm,smollm --steps 40")
    cli.add_training_args(p, steps=40, lr=5e-4, batch=4)
    return p


def train_inner(args):
    args.stage, args.out = "inner", args.out or os.path.join("runs", "inner")
    prepare_out(args)  # before loading anything: a wrong --out or --resume costs nothing
    names, pattern = expand_agents(args.agents, args.pattern)
    roles = topology(pattern, len(names)).roles  # rows are checked before minutes of model loading
    rows = load_rows(args.data, "train", targets=[role_targets(r) for r in roles])
    check_domains(rows, [role_of(r).domain for r in roles], args.data)
    torch.manual_seed(args.seed)
    system = system_from_args(args)
    budget = trainer.target_budget(args, system)
    for role, bb in zip(system.roles, system.backbones):
        texts = [target_text(r, role_targets(role)) for r in rows_of(role, rows)]
        trainer.report_truncation(bb, texts, budget, role)
    system.outer.requires_grad_(False)
    trainer.train(system, system.inner.parameters(), lambda b: inner_loss(system, b, args.max_target_tokens), rows,
                  args)


def main(argv=None):
    return cli.main(parser(), train_inner, argv)


if __name__ == "__main__":
    sys.exit(main())

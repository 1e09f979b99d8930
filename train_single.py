"""
The paper's trained baselines: the FINAL agent fine-tuned alone on the same rows (question -> answer, cross-entropy
on the answer tokens), with a LoRA adapter (PEFT) or with all its weights (full SFT). The prompt is the one the
single-agent baseline answers at inference (agents.py --mode single: the final agent's System.prompt, no slots);
steps, batch, warm-up + cosine schedule, AdamW, checkpoints and --resume are train_outer.py's (trainer.py); the loss
is losses.single_loss.

    python train_single.py --agents smollm --method lora --steps 30      # -> runs/single-lora/adapter.*
    python train_single.py --agents smollm --method full --steps 30      # -> runs/single-full/weights.*

What is trained and how it is saved and loaded back is baselines.py's (Tuned, trained_backbone).
"""
import argparse
import os
import re
import sys

import torch

import cli
import trainer
from recursion import System
from baselines import DEFAULT_LR, LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGETS, METHODS, Tuned
from checkpoints import prepare_out
from errors import UserError
from loading import pick_device, pick_dtype
from losses import single_loss
from patterns import expand_agents
from rows import load_rows


_dropout = cli.checked(float, lambda v: 0 <= v < 1, "a dropout in [0, 1)")


def _targets(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or ("all" in names and len(names) > 1):
        raise argparse.ArgumentTypeError("expected 'all' or module names, e.g. q_proj,v_proj")
    return ",".join(names)


def parser():
    p = cli.Parser(description="Fine-tune the final agent alone (LoRA or full): the trained baselines.",
                   epilog="example: python train_single.py --agents smollm --method lora --steps 30")
    cli.add_training_args(p, steps=30, lr=None, batch=2)  # train_outer.py's steps and batch; lr by method
    p.add_argument("--method", default="lora", choices=METHODS, help="LoRA adapter or every weight")
    p.add_argument("--lora-r", type=cli.positive_int, default=LORA_R, help="LoRA rank (8: the paper's share)")
    p.add_argument("--lora-alpha", type=cli.positive_float, default=LORA_ALPHA, help="LoRA scaling numerator")
    p.add_argument("--lora-dropout", type=_dropout, default=LORA_DROPOUT, help="LoRA dropout")
    p.add_argument("--lora-targets", type=_targets, default=LORA_TARGETS,
                   help="'all' (every linear layer of every decoder layer) or comma-separated module names, "
                        "matched inside the decoder layers only")
    return p


def train_single(args):
    args.stage, args.out = "single", args.out or os.path.join("runs", f"single-{args.method}")
    args.lr = args.lr or DEFAULT_LR[args.method]
    if args.method == "full":  # LoRA settings mean nothing here (and must not block a --resume)
        args.lora_r = args.lora_alpha = args.lora_dropout = args.lora_targets = None
    names, pattern = expand_agents(args.agents, args.pattern)
    if pattern != "sequential":
        raise UserError(f"train_single.py fine-tunes the final agent with the single baseline's solver prompt; "
                        f"the {pattern} pattern's final agent has another role: use --pattern sequential")
    prepare_out(args)  # before loading anything: a wrong --out or --resume costs nothing
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    system = System([names[-1]], "sequential", args.link_variant, device, pick_dtype(args.dtype, device),
                    args.trust_remote_code, fast=args.fast)
    rows = load_rows(args.data, "train")
    trainer.report_truncation(system.backbones[0], [r["answer"] for r in rows], trainer.target_budget(args, system),
                              "answers")
    lora = dict(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                targets=args.lora_targets.split(",")) if args.method == "lora" else {}
    tuned = Tuned(system.backbones[0], args.method, **lora)
    if args.method == "lora":  # where the adapters sit; trainer.train prints their count and share next
        modules = sorted({n.split(".lora_")[0] for n in tuned.params})
        layers = {int(re.search(r"\.layers\.(\d+)\.", n).group(1)) for n in modules}
        leaves = sorted({n.rsplit(".", 1)[-1] for n in modules})
        print(f"LoRA r={args.lora_r}, alpha={args.lora_alpha}: {len(modules)} linear layers in {len(layers)} of "
              f"{system.backbones[0].config.num_hidden_layers} decoder layers ({', '.join(leaves)})", flush=True)
    tuned.backbone.model.train()  # LoRA dropout on (these backbones have no other dropout)
    losses = trainer.train(system, list(tuned.params.values()),
                           lambda batch: single_loss(system, tuned.backbone, batch, args.max_target_tokens),
                           rows, args, weights=tuned)
    if losses:
        print(f"  {'method':34s} {args.method} on {names[-1]} ({system.backbones[0].name}), lr {args.lr}")


def main(argv=None):
    return cli.main(parser(), train_single, argv)


if __name__ == "__main__":
    sys.exit(main())

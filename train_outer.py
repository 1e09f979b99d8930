"""
Stage 2 (docs/method.md §4, outer loop): unroll the whole system for r rounds and train the OUTER links with
cross-entropy on the final agent's answer tokens. Backbones frozen; inner links frozen but differentiable; the outer
links are reused every round, so their gradients add up across rounds.

  --latents rollout (default)  latents are made exactly as at inference (m-step KV-cached rollouts), gradients
                               flow back through the rollouts into every round.
  --latents teacher            the released code's way, kept for fidelity: an agent's latents are its hidden states
                               over its GOLD role text (first --teacher-tokens tokens, 80 as in the release).
                               Caveat: a train/inference mismatch, and a leak:
                               the solver's gold text is the answer, and its latents reach the planner as feedback,
                               so later rounds see an encoding of the gold answer.
  --supervise final|all        CE on the final round only, or + losses.EARLIER_ROUNDS_WEIGHT (0.1) x the mean CE
                               of the earlier rounds.

Offline default (SmolLM2 x2, shared backbone, GSM8K-derived rows, a few minutes on a laptop CPU):
    python train_outer.py
The paper's light pair on a GPU with the hub:
    python train_outer.py --agents qwen,llama --rounds 3 --latent-steps 32 --steps 2000 --batch-size 4 --lr 1e-4
The latent-channel proof (agent 1 reads a secret word, agent 2 must name it from agent 1's latents alone):
    python train_outer.py --data secret --rounds 1 --train-inner --steps 80 --lr 2e-3 --batch-size 8 \
        --latent-steps 8 --max-new-tokens 8
"""
import os
import sys

import torch

import cli
import trainer
from recursion import system_from_args
from checkpoints import prepare_out
from errors import UserError
from losses import EARLIER_ROUNDS_WEIGHT, outer_loss
from patterns import role_targets
from protocol import QUICK, pick
from rows import SECRET_WORDS, load_rows, secret_rows
from scoring import last_boxed


# --- before / after on held-out questions -----------------------------------------------------------------------

def final_answer(text, secret=False):
    boxed = last_boxed(text)
    if secret:  # the boxed word (or, cut before its "}", the first word after "\boxed{"), lower-cased
        word = boxed if boxed is not None else text.strip().removeprefix("\\boxed{")
        return (word.strip().split() or [""])[0].strip(".,!:;\"'{}").lower()
    return boxed.strip() if boxed is not None else "-"


def compare(system, rows, args):
    recs = system.run([r["question"] for r in rows], "latent", args.rounds, args.latent_steps, args.max_new_tokens)
    return [(final_answer(rec["text"], args.data == "secret"), rec["text"]) for rec in recs]


def report(rows, before, after, secret):
    gold = [r["final"] for r in rows]
    if secret:
        acc = lambda res: sum(a == g for (a, _), g in zip(res, gold)) / len(gold)
        print(f"\nheld-out secret words ({len(gold)} prompts, chance {1 / len(SECRET_WORDS):.1%}): "
              f"before {acc(before):.0%}  after {acc(after):.0%}")
        return
    print("\nheld-out questions, before -> after training (final answers; gold in brackets)")
    for r, (b, bt), (a, at), g in zip(rows, before, after, gold):
        print(f"- {r['question'][:70]}...  [{g}]\n    before: {b!r:12}  {bt[:80]!r}\n    after:  {a!r:12}  {at[:80]!r}")


def parser():
    p = cli.Parser(description="Train the outer RecursiveLinks (stage 2) on the whole looped system.",
                   epilog="example: python train_outer.py --data secret --rounds 1 --train-inner --steps 80 "
                          "--lr 2e-3 --batch-size 8 --latent-steps 8 --max-new-tokens 8   (the latent-channel proof)")
    cli.add_training_args(p, steps=30, lr=5e-4, batch=2)
    cli.add_loop_args(p)
    cli.add_decoding_args(p)  # --max-new-tokens: the before/after answers
    p.add_argument("--latents", default="rollout", choices=["rollout", "teacher"],
                   help="rollout: latents made as at inference; teacher: the release's gold-text latents")
    p.add_argument("--teacher-tokens", type=cli.positive_int, default=80,
                   help="--latents teacher: latents from the first N tokens of each gold role text (release: 80)")
    p.add_argument("--supervise", default="final", choices=["final", "all"],
                   help=f"answer CE of the final round, or + {EARLIER_ROUNDS_WEIGHT} x the earlier rounds'")
    p.add_argument("--train-inner", action="store_true", help="also train the inner links (default: frozen)")
    p.add_argument("--grad-ckpt", action="store_true",
                   help="gradient checkpointing in the answer pass: less memory, ~30%% more time")
    p.add_argument("--eval-questions", type=cli.count, default=3, help="held-out questions answered before and after")
    return p


def train_outer(args):
    if args.latents == "teacher" and args.data == "secret":
        raise UserError("--latents teacher needs role texts (plan, refined_plan, answer); the secret task has none: "
                        "use --latents rollout")
    args.stage, args.out = "outer", args.out or os.path.join("runs", "outer" if args.data != "secret" else "secret")
    for k in ("rounds", "latent_steps", "max_new_tokens"):
        setattr(args, k, pick(args, QUICK, k))
    prepare_out(args)  # before loading anything: a wrong --out or --resume costs nothing
    torch.manual_seed(args.seed)
    system = system_from_args(args)
    budget = trainer.target_budget(args, system)
    if args.data == "secret":
        rows, held = secret_rows(len(system.roles)), secret_rows(len(system.roles), held_out=True)
    else:
        needs = [role_targets(r) for r in system.roles] if args.latents == "teacher" else []
        rows = load_rows(args.data, "train", targets=needs)
        held = load_rows("arith2" if args.data == "arith2" else "gsm8k", "test")[:args.eval_questions]
        trainer.report_truncation(system.backbones[-1], [r["answer"] for r in rows], budget, "answers")
    system.inner.requires_grad_(args.train_inner)
    params = list(system.outer.parameters()) + (list(system.inner.parameters()) if args.train_inner else [])
    before = compare(system, held, args) if held and not args.resume else None
    trainer.train(system, params, lambda batch: outer_loss(system, batch, args), rows, args)
    if before is not None:
        report(held, before, compare(system, held, args), secret=args.data == "secret")


def main(argv=None):
    return cli.main(parser(), train_outer, argv)


if __name__ == "__main__":
    sys.exit(main())

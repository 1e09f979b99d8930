"""
Stage 2 (docs/method.md §4, outer loop): unroll the whole system for r rounds and train the OUTER links with
cross-entropy on the final agent's answer tokens. Backbones frozen; inner links frozen but differentiable; the outer
links are reused every round, so their gradients add up across rounds.

  --latents rollout (default)  latents are made exactly as at inference (m-step KV-cached rollouts), gradients
                               flow back through the rollouts into every round.
  --latents teacher            the released code's way, kept for fidelity: an agent's latents are its hidden states
                               over its GOLD role text (first --teacher-tokens tokens, 80 as in the release). Caveat: a train/inference mismatch, and a leak:
                               the solver's gold text is the answer, and its latents reach the planner as feedback,
                               so later rounds see an encoding of the gold answer.
  --supervise final|all        CE on the final round only, or + 0.1 x mean CE of the earlier rounds.

Offline default (SmolLM2 x2, shared backbone, GSM8K-derived rows, a few minutes on a laptop CPU):
    python train_outer.py
The paper's light pair on a GPU with the hub:
    python train_outer.py --agents qwen,llama --rounds 3 --latent-steps 32 --steps 2000 --batch-size 4 --lr 1e-4
The latent-channel proof (agent 1 reads a secret word, agent 2 must name it from agent 1's latents alone):
    python train_outer.py --data secret --rounds 1 --train-inner --steps 80 --lr 2e-3
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

import trainer
from agents import Parser, add_loop_args, count, new_tokens, positive_int, system_from_args
from patterns import role_targets
from rows import DataError, load_rows, secret_rows, target_text
from errors import UserError
from scoring import last_boxed


def answer_ce(backbone, embeds, mask, answers, max_tokens, checkpoint=False):
    """Mean cross-entropy of the answer tokens (end token included) after the final agent's inputs."""
    T = embeds.shape[1]
    full, full_mask, ids, tmask = trainer.append_targets(backbone, embeds, mask, answers, max_tokens)
    if checkpoint:
        hidden = backbone.forward_checkpointed(full, full_mask)
    else:
        hidden, _ = backbone.forward(full, full_mask)
    logits = backbone.logits(hidden[:, T - 1:-1]).float()  # [B, L, V]: position T-1+j predicts target token j
    return F.cross_entropy(logits.flatten(0, 1), ids.masked_fill(tmask == 0, -100).flatten())


def teacher_latents(system, rows, n):
    """make_latents for --latents teacher: inner(hidden states over the agent's gold role text), its first n tokens
    (shorter texts padded with the end token, so every row sends n latents)."""
    def make(i, embeds, mask, round_):
        bb, role = system.backbones[i], system.roles[i]
        T = embeds.shape[1]
        texts = [target_text(r, role_targets(role)) for r in rows]
        full, _, _, tmask = trainer.append_targets(bb, embeds, mask, texts, n, pad_to=n)
        hidden, _ = bb.forward(full[:, :T + n], torch.cat([mask, torch.ones_like(tmask)], 1))
        return system.inner[role](hidden[:, T:T + n])  # [B, n, d]
    return make


def outer_loss(system, rows, args):
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    make = teacher_latents(system, rows, args.teacher_tokens) if args.latents == "teacher" else None
    finals = system.latent_pass(questions, args.rounds, args.latent_steps, make_latents=make)
    bb = system.backbones[-1]
    ck = getattr(args, "grad_ckpt", False)
    if args.supervise == "final" or len(finals) == 1:
        return answer_ce(bb, *finals[-1], answers, args.max_target_tokens, ck)
    ces = [answer_ce(bb, e, m, answers, args.max_target_tokens, ck) for e, m in finals]
    return ces[-1] + 0.1 * torch.stack(ces[:-1]).mean()


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
        print(f"\nheld-out secret words ({len(gold)} prompts, chance {1 / 8:.0%}): "
              f"before {acc(before):.0%}  after {acc(after):.0%}")
        return
    print("\nheld-out questions, before -> after training (final answers; gold in brackets)")
    for r, (b, bt), (a, at), g in zip(rows, before, after, gold):
        print(f"- {r['question'][:70]}...  [{g}]\n    before: {b!r:12}  {bt[:80]!r}\n    after:  {a!r:12}  {at[:80]!r}")


def main(argv=None):
    p = Parser(description="Train the outer RecursiveLinks (stage 2) on the whole looped system.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter,
               epilog="example: python train_outer.py --data secret --rounds 1 --train-inner "
                      "--steps 80 --lr 2e-3   (the latent-channel proof)")
    trainer.add_args(p, steps=30, lr=5e-4, batch=2)
    add_loop_args(p)
    p.add_argument("--latents", default="rollout", choices=["rollout", "teacher"],
                   help="rollout: latents made as at inference; teacher: the release's gold-text latents")
    p.add_argument("--teacher-tokens", type=positive_int, default=80,
                   help="--latents teacher: latents from the first N tokens of each gold role text (release: 80)")
    p.add_argument("--supervise", default="final", choices=["final", "all"],
                   help="answer CE of the final round, or + 0.1 x the earlier rounds'")
    p.add_argument("--train-inner", action="store_true", help="also train the inner links (default: frozen)")
    p.add_argument("--grad-ckpt", action="store_true",
                   help="gradient checkpointing in the answer pass: less memory, ~30%% more time")
    p.add_argument("--eval-questions", type=count, default=3, help="held-out questions answered before and after")
    p.add_argument("--max-new-tokens", type=new_tokens, default=96, help="for the before/after answers")
    args = p.parse_args(argv)
    args.stage, args.out = "outer", args.out or os.path.join("runs", "outer" if args.data != "secret" else "secret")
    try:
        trainer.prepare_out(args)  # before loading anything: a wrong --out or --resume costs nothing
        torch.manual_seed(args.seed)
        system = system_from_args(args)
        budget = trainer.target_budget(args, system)
        if args.data == "secret":
            rows, held = secret_rows(), secret_rows(held_out=True)
        else:
            needs = [role_targets(r) for r in system.roles] if args.latents == "teacher" else []
            rows = load_rows(args.data, "train", targets=needs)
            held = load_rows("gsm8k", "test")[:args.eval_questions]
            trainer.report_truncation(system.backbones[-1], [r["answer"] for r in rows], budget, "answers")
        if args.latents == "teacher" and args.data == "secret":
            raise UserError("--latents teacher needs role texts (plan, refined_plan, answer); the secret task has none")
        system.inner.requires_grad_(args.train_inner)
        params = list(system.outer.parameters()) + (list(system.inner.parameters()) if args.train_inner else [])
        before = compare(system, held, args) if held and not args.resume else None
        trainer.train(system, params, lambda batch: outer_loss(system, batch, args), rows, args)
        if before is not None:
            after = compare(system, held, args)
            report(held, before, after, secret=args.data == "secret")
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

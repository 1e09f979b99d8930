"""
The training loop every trainer shares (train_inner.py, train_outer.py: the links; train_single.py: a LoRA adapter or
the full weights of one agent).

AdamW (0.9, 0.95), linear warm-up then cosine decay, grad-clip 1.0; progress lines with loss, steps/s and ETA; a
checkpoint every --ckpt-every steps (checkpoints.py: the trained weights plus the optimizer and schedule state,
atomic and checksummed) and --resume that continues from the newest one; a non-finite loss stops the run and keeps
the last good checkpoint; several GPUs through torchrun (each rank takes its share of the batch, gradients are
averaged with torch.distributed.all_reduce). Batches and the random state (dropout) are a pure function of
(seed, step) (protocol.seed_of), so a resumed run computes what an uninterrupted one does.
"""
import math
import os
import random
import resource
import sys
import time

import torch
import torch.distributed as dist

from checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from protocol import seed_of

BETAS, GRAD_CLIP = (0.9, 0.95), 1.0  # AdamW betas, gradient-norm clip (docs/method.md §9)


def distributed():
    """(rank, world size); initialises torch.distributed when started by torchrun."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_lambda(warmup, total):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def batch_for(rows, step, batch_size, seed, rank=0, world=1):
    """The rows of one step: a pure function of (seed, step); each rank takes its own slice."""
    rng = random.Random(seed_of(seed, step))
    picked = [rows[rng.randrange(len(rows))] for _ in range(batch_size * world)]
    return picked[rank::world]


# ----------------------------------------------------------------------------------------------------------------
# What is trained, and how it is saved: the system's links by default; train_single.py passes its own object with
# the same members (name: the checkpoint's file name, label: for the log, save(path, extra), load(path)).

class LinkWeights:
    """The RecursiveLinks of a System, saved as OUT/links.* (agents.py / evaluate.py --links OUT/links)."""
    name, label = "links", "link"

    def __init__(self, system):
        self.system = system

    def save(self, path, extra):
        self.system.save_links(path, extra)

    def load(self, path):
        self.system.load_links(path)  # a UserError naming the file when it is corrupt or for other agents


def peak_memory_gb(device):
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (whole process)


def train(system, params, loss_fn, rows, args, weights=None, progress=None):
    """Minimise loss_fn(batch_rows) over `params` for args.steps steps, in the run folder args.out that
    checkpoints.prepare_out has checked; checkpoints save and restore `weights` (default: the system's links,
    LinkWeights). progress(step, loss), when given, is called after every step instead of the progress lines and
    the summary (a caller with its own progress bar). Returns the losses."""
    weights = weights or LinkWeights(system)
    os.makedirs(args.out, exist_ok=True)
    rank, world = distributed()
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=BETAS, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.warmup, args.steps))
    start, losses = 0, []
    if args.resume:
        start, losses = load_checkpoint(args.out, weights, opt, sched)
        log(rank, f"resumed from step {start} in {args.out}")
    n_train = sum(p.numel() for p in params)
    n_frozen = sum(bb.num_params() for bb in {id(b): b for b in system.backbones}.values())
    of = "frozen" if weights.name == "links" else "the backbone"
    say = (lambda msg: None) if progress is not None else (lambda msg: log(rank, msg))  # a caller's bar speaks
    say(f"training {n_train:,} {weights.label} parameters ({100 * n_train / n_frozen:.2f}% of {n_frozen:,} "
        f"{'frozen' if weights.name == 'links' else 'in the backbone'}), "
        f"steps {start}->{args.steps}, batch {args.batch_size} x {world} rank(s), lr {args.lr}")
    device = system.backbones[-1].device
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0, first = time.time(), None
    for step in range(start, args.steps):
        batch = batch_for(rows, step, args.batch_size, args.seed, rank, world)
        torch.manual_seed(seed_of(args.seed, step))  # dropout etc.: a pure function of (seed, step), like batches
        loss = loss_fn(batch)
        if not torch.isfinite(loss):
            log(rank, f"error: loss is {loss.item()} at step {step + 1}; stopping. The last good checkpoint is kept in "
                      f"{args.out} (lower --lr, or check the data); continue with --resume")
            sys.exit(3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= world
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        lr = sched.get_last_lr()[0]  # the lr this step trains with (sched.step() moves on to the next step's)
        opt.step()
        sched.step()
        losses.append(loss.item())
        first = losses[0] if first is None else first
        done = step + 1
        if progress is not None:
            progress(done, losses[-1])
        elif done % args.log_every == 0 or done == args.steps or done == start + 1:
            rate = (done - start) / (time.time() - t0)
            log(rank, f"step {done:5d}/{args.steps}  loss {losses[-1]:.4f}  lr {lr:.2e}  "
                      f"{rate:.2f} steps/s  ETA {(args.steps - done) / rate:.0f} s")
        if rank == 0 and (done % args.ckpt_every == 0 or done == args.steps):
            try:
                save_checkpoint(args.out, weights, opt, sched, done, losses, args)
            except CheckpointError as e:  # non-finite weights: nothing worth keeping was made at this step
                log(rank, f"error: {e} (step {done}); stopping. The last good checkpoint is kept in {args.out}")
                sys.exit(3)
    seconds = time.time() - t0
    if losses and progress is None:
        k = max(1, min(5, len(losses) // 4))
        log(rank, "\nsummary")
        for key, val in [("loss (first -> last, mean of %d)" % k,
                          f"{sum(losses[:k]) / k:.4f} -> {sum(losses[-k:]) / k:.4f}"),
                         ("trainable parameters", f"{n_train:,} ({100 * n_train / n_frozen:.3f}% of {of})"),
                         ("backbone parameters" if weights.name == "weights" else "frozen parameters", f"{n_frozen:,}"),
                         ("peak memory", f"{peak_memory_gb(device):.2f} GB ({device})"),
                         ("time", f"{seconds:.0f} s for {args.steps - start} steps"),
                         (weights.name, os.path.join(args.out, weights.name))]:
            log(rank, f"  {key:34s} {val}")
    return losses


def target_budget(args, system):
    """Resolve --max-target-tokens (None: 160 on a CPU, 2048 on a GPU) and say how many role targets it cuts."""
    if args.max_target_tokens is None:
        args.max_target_tokens = 2048 if system.backbones[-1].device.type == "cuda" else 160
    return args.max_target_tokens


def report_truncation(backbone, texts, max_tokens, what, rank=0):
    """Print the share of target texts longer than the budget (they are cut, and their end is not supervised)."""
    long = sum(len(ids) > max_tokens for ids in backbone.tokenizer(list(texts), add_special_tokens=False)["input_ids"])
    log(rank, f"{what}: {long}/{len(texts)} targets ({100 * long / max(1, len(texts)):.1f}%) are longer than "
              f"--max-target-tokens {max_tokens} and are cut (no end token learned for those)")
    return long / max(1, len(texts))


def log(rank, msg):
    if rank == 0:
        print(msg, flush=True)

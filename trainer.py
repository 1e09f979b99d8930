"""
The training loop both stages share (train_inner.py, train_outer.py): only RecursiveLink parameters learn.

AdamW (0.9, 0.95), linear warm-up then cosine decay, grad-clip 1.0; progress lines with loss, steps/s and ETA;
atomic checkpoints that hold the links plus the optimizer and schedule state, and --resume that continues from the
newest one; a non-finite loss stops the run and keeps the last good checkpoint; several GPUs through torchrun
(each rank takes its share of the batch, gradients are averaged with torch.distributed.all_reduce).

A run folder looks like:
    OUT/links.safetensors, OUT/links.json     the newest links (what agents.py / evaluate.py --links OUT/links load)
    OUT/step-000040/                          links + state.pt (optimizer, schedule, step, losses) for --resume
    OUT/latest                                the name of the newest step folder
Batches are a pure function of (seed, step), so a resumed run sees the same data as an uninterrupted one.
"""
import math
import os
import random
import resource
import shutil
import sys
import tempfile
import time

import torch
import torch.distributed as dist

from agents import add_system_args, checked, count, positive_int, text
from model import UserError


learning_rate = checked(float, lambda v: 0 < v < 1, "a learning rate in (0, 1)")


def add_args(p, steps, lr, batch):
    """The options both stages share: the system's (agents.add_system_args), then the training run's."""
    add_system_args(p)
    p.add_argument("--data", default="gsm8k", type=text,
                   help="'gsm8k' (rows derived from GSM8K train, offline), 'secret' (train_outer.py: the "
                        "latent-channel task) or a .jsonl/.json file of rows (rows.py)")
    p.add_argument("--steps", type=positive_int, default=steps, help="optimizer steps")
    p.add_argument("--batch-size", type=positive_int, default=batch, help="rows per step (per rank)")
    p.add_argument("--lr", type=learning_rate, default=lr, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=count, default=10, help="linear warm-up steps before the cosine decay")
    p.add_argument("--max-target-tokens", type=positive_int, default=None,
                   help="cut target texts to this many tokens (default: 160 on a CPU, 2048 on a GPU); a cut target "
                        "has no end token, so the model is never taught to stop where the cut falls")
    p.add_argument("--out", default=None, help="run folder for checkpoints (default runs/<stage>)")
    p.add_argument("--ckpt-every", type=positive_int, default=20, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches and of torch")
    p.add_argument("--log-every", type=positive_int, default=5, help="a progress line every N steps")


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
    rng = random.Random(seed * 1_000_003 + step)
    picked = [rows[rng.randrange(len(rows))] for _ in range(batch_size * world)]
    return picked[rank::world]


def save_checkpoint(out, system, opt, sched, step, losses, args):
    """Write OUT/step-N/ to a temp folder and rename it (atomic), then point OUT/latest at it, then refresh OUT/links."""
    os.makedirs(out, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = tempfile.mkdtemp(dir=out, prefix=".tmp-")
    system.save_links(os.path.join(tmp, "links"), extra=dict(step=step, stage=args.stage))
    torch.save(dict(optimizer=opt.state_dict(), scheduler=sched.state_dict(), step=step, losses=losses,
                    args={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}),
               os.path.join(tmp, "state.pt"))
    shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    os.replace(tmp, os.path.join(out, name))
    _write_atomic(os.path.join(out, "latest"), name)
    system.save_links(os.path.join(out, "links"), extra=dict(step=step, stage=args.stage))
    for old in sorted(d for d in os.listdir(out) if d.startswith("step-"))[:-2]:  # keep the newest two
        shutil.rmtree(os.path.join(out, old), ignore_errors=True)


def _write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_checkpoint(out, system, opt, sched):
    latest = os.path.join(out, "latest")
    if not os.path.exists(latest):
        raise UserError(f"--resume: no checkpoint in '{out}' (no '{latest}'); start without --resume")
    folder = os.path.join(out, open(latest).read().strip())
    system.load_links(os.path.join(folder, "links"))  # refuses links of other agents / sizes with a clear message
    state = torch.load(os.path.join(folder, "state.pt"), weights_only=True)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state["step"], state["losses"]


def peak_memory_gb(device):
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (whole process)


def train(system, params, loss_fn, rows, args):
    """Minimise loss_fn(batch_rows) over `params` (the trainable links) for args.steps steps. Returns the losses."""
    rank, world = distributed()
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.warmup, args.steps))
    start, losses = 0, []
    if args.resume:
        start, losses = load_checkpoint(args.out, system, opt, sched)
        log(rank, f"resumed from step {start} in {args.out}")
    n_train = sum(p.numel() for p in params)
    n_frozen = sum(bb.num_params() for bb in {id(b): b for b in system.backbones}.values())
    log(rank, f"training {n_train:,} link parameters ({100 * n_train / n_frozen:.2f}% of {n_frozen:,} frozen), "
              f"steps {start}->{args.steps}, batch {args.batch_size} x {world} rank(s), lr {args.lr}")
    device = system.backbones[-1].device
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0, first = time.time(), None
    for step in range(start, args.steps):
        batch = batch_for(rows, step, args.batch_size, args.seed, rank, world)
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
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        first = losses[0] if first is None else first
        done = step + 1
        if done % args.log_every == 0 or done == args.steps or done == start + 1:
            rate = (done - start) / (time.time() - t0)
            log(rank, f"step {done:5d}/{args.steps}  loss {losses[-1]:.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                      f"{rate:.2f} steps/s  ETA {(args.steps - done) / rate:.0f} s")
        if rank == 0 and (done % args.ckpt_every == 0 or done == args.steps):
            save_checkpoint(args.out, system, opt, sched, done, losses, args)
    seconds = time.time() - t0
    if losses:
        k = max(1, min(5, len(losses) // 4))
        log(rank, "\nsummary")
        for key, val in [("loss (first -> last, mean of %d)" % k,
                          f"{sum(losses[:k]) / k:.4f} -> {sum(losses[-k:]) / k:.4f}"),
                         ("trainable parameters", f"{n_train:,} ({100 * n_train / n_frozen:.3f}% of frozen)"),
                         ("frozen parameters", f"{n_frozen:,}"),
                         ("peak memory", f"{peak_memory_gb(device):.2f} GB ({device})"),
                         ("time", f"{seconds:.0f} s for {args.steps - start} steps"),
                         ("links", os.path.join(args.out, "links"))]:
            log(rank, f"  {key:34s} {val}")
    return losses


def append_targets(backbone, embeds, mask, texts, max_tokens, pad_to=None):
    """Teacher forcing: [prompt inputs | target text tokens + end token], right-padded.
    A target longer than max_tokens is cut there and gets NO end token: the model must not learn to stop mid-text.
    Returns embeds [B, T+L, d], mask [B, T+L], target ids [B, L] (pad where target_mask is 0), target_mask [B, L].
    The state at position T-1+j predicts target token j."""
    eos = backbone.tokenizer.eos_token_id
    ids = [backbone.encode(t) for t in texts]
    ids = [x[:max_tokens] if len(x) > max_tokens else x + [eos] for x in ids]
    L = pad_to or max(len(x) for x in ids)
    tmask = torch.tensor([[1] * min(len(x), L) + [0] * (L - len(x)) for x in ids], device=mask.device)
    ids = torch.tensor([(x + [eos] * L)[:L] for x in ids], device=mask.device)
    return (torch.cat([embeds, backbone.embed(ids)], 1), torch.cat([mask, tmask], 1), ids, tmask)


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

"""
The training loop every trainer shares (train_inner.py, train_outer.py: the links; train_single.py: a LoRA adapter or
the full weights of one agent).

AdamW (0.9, 0.95), linear warm-up then cosine decay, grad-clip 1.0; progress lines with loss, steps/s and ETA;
atomic checkpoints that hold the trained weights plus the optimizer and schedule state, and --resume that continues from the
newest one; a non-finite loss stops the run and keeps the last good checkpoint; several GPUs through torchrun
(each rank takes its share of the batch, gradients are averaged with torch.distributed.all_reduce).

A run folder looks like (NAME: links, adapter or weights):
    OUT/NAME.safetensors, OUT/NAME.json   the newest weights (what agents.py / evaluate.py --links OUT/links load)
    OUT/step-000040/                      NAME.* + state.pt (optimizer, schedule, losses) + run.json (step, args)
    OUT/latest                            the name of the newest step folder
Every file of a checkpoint is under a checksum: NAME.json holds the sha256 of NAME.safetensors, of state.pt and of
run.json, and its own (links.py); --resume checks them all before any model loads and refuses a mismatch.
Batches and the random state (dropout) are a pure function of (seed, step), so a resumed run computes what an
uninterrupted one does. Nothing is lost: a non-empty OUT needs --resume or --overwrite; OUT is checked writable before
the first step; every checkpoint is written to a .tmp- name and renamed (stale ones are removed at start); a resume
that would change what is trained (--agents, --train-inner, --method, ...) is refused.
"""
import json
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

from agents import add_system_args, checked, count, out_folder, positive_int, text
from links import CheckpointError, read_meta, sha256_file
from errors import UserError, first_line

# Settings that decide WHAT is trained: a --resume must not change them (the rest may change, with a note).
TRAINED_BY = ("stage", "agents", "pattern", "link_variant", "train_inner", "method", "lora_r", "lora_alpha",
              "lora_dropout", "lora_targets")
RUN_FILES = ("links", "adapter", "weights")  # what a run folder may hold besides step-*/, latest and .tmp-*


BETAS, GRAD_CLIP, WARMUP = (0.9, 0.95), 1.0, 10  # AdamW betas, gradient-norm clip, warm-up steps (docs/method.md §9)
positive_float = checked(float, lambda v: v > 0, "a finite number > 0")  # checked() refuses nan and inf
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
    p.add_argument("--warmup", type=count, default=WARMUP, help="linear warm-up steps before the cosine decay")
    p.add_argument("--max-target-tokens", type=positive_int, default=None,
                   help="cut target texts to this many tokens (default: 160 on a CPU, 2048 on a GPU); a cut target "
                        "has no end token, so the model is never taught to stop where the cut falls")
    p.add_argument("--out", default=None, type=out_folder, help="run folder for checkpoints (default runs/<stage>)")
    p.add_argument("--ckpt-every", type=positive_int, default=20, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out first and start afresh")
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


# ----------------------------------------------------------------------------------------------------------------
# The run folder

def _simple_args(args):
    return {k: v for k, v in vars(args).items()
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}


CHECKED_FILES = ("state.pt", "run.json")  # a step folder's files besides NAME.*, whose sha256 NAME.json holds


def checkpoint_folder(out):
    """The step folder OUT/latest names, every file in it checked against its checksum (NAME.json's own, the tensor
    file's, state.pt's and run.json's); None when OUT has no 'latest'. UserError with one line otherwise.
    A step folder written before state.pt and run.json had checksums (no "files" in NAME.json) is accepted with
    what it has: its tensor file and JSON are still checked."""
    latest = os.path.join(out, "latest")
    if not os.path.exists(latest):
        return None
    try:
        with open(latest, encoding="utf-8") as f:
            name = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--resume: cannot read '{latest}' ({e}); start again with --overwrite") from None
    folder = os.path.join(out, name)
    if not name.startswith("step-") or "/" in name or not os.path.isdir(folder):
        raise UserError(f"--resume: '{latest}' names '{name}', which is not a step folder in '{out}'; "
                        f"the run is incomplete: start again with --overwrite")
    weights = [n for n in RUN_FILES if os.path.exists(os.path.join(folder, n + ".json"))]
    if not weights:
        raise UserError(f"--resume: '{folder}' holds no {'/'.join(RUN_FILES)}.json; the checkpoint is incomplete: "
                        f"start again with --overwrite")
    path = os.path.join(folder, weights[0])
    try:
        info = read_meta(path)
        if sha256_file(path + ".safetensors") != info["sha256"]:
            raise CheckpointError(f"checkpoint '{path}.safetensors' does not match the sha256 in {path}.json: the "
                                  f"file is corrupt or was not fully written")
    except (FileNotFoundError, CheckpointError) as e:
        raise UserError(f"--resume: {e}; start again with --overwrite") from None
    files = info.get("files")
    for f in CHECKED_FILES if files is not None else ():
        p = os.path.join(folder, f)
        if not os.path.isfile(p):
            raise UserError(f"--resume: '{p}' is missing; the checkpoint is incomplete: start again with --overwrite")
        if not isinstance(files, dict) or sha256_file(p) != files.get(f):
            raise UserError(f"--resume: '{p}' does not match the sha256 in {path}.json: it is corrupt or was "
                            f"changed; start again with --overwrite")
    return folder


def _checkpoint_run(out):
    """The run.json ({step, args}) of the checkpoint OUT/latest names (checked: checkpoint_folder), or None."""
    folder = checkpoint_folder(out)
    if folder is None:
        return None
    run = os.path.join(folder, "run.json")
    try:
        with open(run, encoding="utf-8") as f:
            saved = json.load(f)
        if not isinstance(saved["args"], dict) or not isinstance(saved["step"], int):
            raise ValueError("no args or step")
        return saved
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--resume: cannot read '{run}' ({e}); the checkpoint is incomplete: start again with "
                        f"--overwrite") from None


def _remove(path):
    """Rename to a .tmp- name first, so a kill half-way through leaves only something prepare_out cleans up."""
    gone = os.path.join(os.path.dirname(path), f".tmp-gone-{os.getpid()}-{os.path.basename(path)}")
    os.replace(path, gone)
    _delete(gone)


def _delete(path):
    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def prepare_out(args):
    """Check and prepare the run folder args.out before any work (idempotent, so train() calls it again):
    stale .tmp-* entries removed; a non-empty folder needs --resume (whose checkpoint must train the same thing)
    or --overwrite (which deletes the old run's files, and only those); the folder must be writable.
    The scripts call it right after parsing, so a mistake costs no model loading; train() calls it when they did not."""
    if getattr(args, "_out_ready", False):
        return
    out, resume, overwrite = args.out, args.resume, getattr(args, "overwrite", False)
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes, cleans or deletes
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: pick one")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out '{out}' is a file, not a folder; pass another --out")
    if os.path.isdir(out):
        for name in os.listdir(out) if first else []:
            if name.startswith(".tmp-"):  # left by a run that was killed while writing
                _delete(os.path.join(out, name))
        ours = lambda n: (n.startswith("step-") or n == "latest"
                          or any(n in (f + ".safetensors", f + ".json") for f in RUN_FILES))
        entries = [n for n in os.listdir(out) if not n.startswith(".tmp-")]
        if overwrite and first:
            others = [n for n in entries if not ours(n)]
            if others:
                raise UserError(f"--overwrite: '{out}' holds files that are not a training run's "
                                f"({', '.join(sorted(others)[:3])}); pick another --out")
            for n in entries:
                _remove(os.path.join(out, n))
        elif entries and not resume:
            raise UserError(f"--out '{out}' already holds a run; continue it with --resume, replace it with "
                            f"--overwrite, or pick another --out")
    if resume:
        run = _checkpoint_run(out)
        if run is None:
            raise UserError(f"--resume: no checkpoint in '{out}' (no '{os.path.join(out, 'latest')}'); "
                            f"start without --resume")
        saved = run["args"]
        if getattr(args, "steps", None) is not None and args.steps < run["step"]:
            raise UserError(f"--resume: the run in '{out}' has done {run['step']} steps already, more than --steps "
                            f"{args.steps}; pass --steps {run['step']} or more (the total, not the steps to add)")
        now = _simple_args(args)
        changed = [k for k in TRAINED_BY if saved.get(k) != now.get(k) and (k in saved or k in now)]
        if changed:
            k = changed[0]
            raise UserError(f"--resume would change what is trained: --{k.replace('_', '-')} was {saved.get(k)!r} "
                            f"in '{out}', now {now.get(k)!r}; resume with the same setting, or start with --overwrite")
        quiet = set(TRAINED_BY) | {"resume", "overwrite", "out", "log_every", "ckpt_every"}
        notes = [f"--{k.replace('_', '-')} {saved.get(k)} -> {now.get(k)}" for k in sorted(set(saved) | set(now))
                 if k not in quiet and saved.get(k) != now.get(k) and now.get(k) is not None]  # None: resolved later
        if notes and first:
            print(f"note: resuming with changed settings: {', '.join(notes)}", flush=True)
    try:
        os.makedirs(out, exist_ok=True)
        if not first:
            return
        fd, probe = tempfile.mkstemp(dir=out, prefix=".tmp-probe-")
        os.write(fd, b"ok")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--out '{out}' is not writable ({e.strerror}); pass a folder you can write to") from None
    args._out_ready = True


def save_checkpoint(out, weights, opt, sched, step, losses, args):
    """OUT/step-N/ is written in a temp folder and renamed (atomic), then OUT/latest points at it, then OUT/NAME.*
    (hard links to the step's files where the file system allows, else copies) are refreshed, the tensor file
    first and its JSON (holding the tensor file's checksum) last; then older step folders are pruned."""
    name, extra = f"step-{step:06d}", dict(step=step, stage=args.stage, args=_simple_args(args))
    tmp = tempfile.mkdtemp(dir=out, prefix=".tmp-")
    torch.save(dict(optimizer=opt.state_dict(), scheduler=sched.state_dict(), step=step, losses=losses),
               os.path.join(tmp, "state.pt"))
    with open(os.path.join(tmp, "run.json"), "w") as f:
        json.dump(dict(step=step, args=_simple_args(args)), f, indent=1)
    # the weights' JSON last: it holds the checksums of state.pt and run.json (and its own), so it vouches for all
    extra["files"] = {f: sha256_file(os.path.join(tmp, f)) for f in CHECKED_FILES}
    weights.save(os.path.join(tmp, weights.name), extra)
    if os.path.exists(os.path.join(out, name)):
        _remove(os.path.join(out, name))
    os.replace(tmp, os.path.join(out, name))
    write_atomic(os.path.join(out, "latest"), name)
    for suffix in (".safetensors", ".json"):  # the JSON last: its checksum vouches for the tensor file
        src, tmp = os.path.join(out, name, weights.name + suffix), os.path.join(out, f".tmp-{os.getpid()}{suffix}")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, os.path.join(out, weights.name + suffix))
    steps = sorted(d for d in os.listdir(out) if d.startswith("step-"))
    for old in [d for d in steps if d != name and d not in steps[:steps.index(name)][-1:]]:  # keep this and the last
        _remove(os.path.join(out, old))


def write_atomic(path, text):
    """Write text to path through a temporary file in the same folder, so a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_checkpoint(out, weights, opt, sched):
    folder = checkpoint_folder(out)  # every file checked against its checksum
    if folder is None:
        raise UserError(f"--resume: no checkpoint in '{out}' (no '{os.path.join(out, 'latest')}'); "
                        f"start without --resume")
    weights.load(os.path.join(folder, weights.name))  # refuses corrupt weights / other agents with a clear message
    path = os.path.join(folder, "state.pt")
    try:  # a step folder from before state.pt had a checksum can still be cut short
        state = torch.load(path, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        return state["step"], state["losses"]
    except Exception as e:
        raise UserError(f"--resume: cannot load '{path}' ({first_line(e)}); it is corrupt or from another run: start "
                        f"again with --overwrite") from None


def peak_memory_gb(device):
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (whole process)


def train(system, params, loss_fn, rows, args, weights=None):
    """Minimise loss_fn(batch_rows) over `params` for args.steps steps; checkpoints save and restore `weights`
    (default: the system's links, LinkWeights). Returns the losses."""
    prepare_out(args)
    weights = weights or LinkWeights(system)
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
    log(rank, f"training {n_train:,} {weights.label} parameters ({100 * n_train / n_frozen:.2f}% of {n_frozen:,} "
              f"{'frozen' if weights.name == 'links' else 'in the backbone'}), "
              f"steps {start}->{args.steps}, batch {args.batch_size} x {world} rank(s), lr {args.lr}")
    device = system.backbones[-1].device
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0, first = time.time(), None
    for step in range(start, args.steps):
        batch = batch_for(rows, step, args.batch_size, args.seed, rank, world)
        torch.manual_seed(args.seed * 1_000_003 + step)  # dropout etc.: a pure function of (seed, step), like batches
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
        if done % args.log_every == 0 or done == args.steps or done == start + 1:
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
    if losses:
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

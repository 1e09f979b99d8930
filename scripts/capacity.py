"""
Channel capacity: how many digits (or words) a trained latent channel carries from agent 1 to agent 2, per number of
latent steps m (channel.py; the payload task in tasks.py).

Agents in the relay pattern (patterns.py: the sender reads, the receiver writes). For each family, the sender's inner
link is trained once (stage 1, --inner-steps: its rollout learns to "say" the payload); then for each m, the outer
link is trained from there (stage 2, --steps: the receiver learns to write what the latents carry), on payloads of
every length k in --k-values mixed together (channel.py). Held-out payloads, in held-out phrasings, are then read
back three ways: through the trained channel, with shuffled latents and with zeroed latents (channel.CONTROLS). It
reports, per m, the largest k carried at >= 90% exact match and the bits per latent step that makes
(k log2 |alphabet| / m), and writes:

  OUT/cells.jsonl   one line per (family, m, k, control): accuracy, n, chance, seconds (written as each m finishes)
  OUT/rows.jsonl    every answer: payload, the partner's payload (shuffled), text, prediction, verdict
  OUT/<family>-inner/, OUT/<family>-m<m>/   the links and training state of each stage (--resume continues)
  OUT/capacity.md   the table; OUT/capacity.png the plot (accuracy against k, one line per m; needs matplotlib)

    python scripts/capacity.py                          # digits and words, m = 2,4,8,16, k = 1..6 (SmolLM2 x2)
    python scripts/capacity.py --families digits --m-values 4 --k-values 1,2 --steps 10    # a quick look
"""
import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # noqa: E402
import tasks  # noqa: E402
from checkpoints import checkpoint_run  # noqa: E402
from channel import CONTROLS, fresh_links, read_back, thoughts_of, train_reader, train_sender  # noqa: E402
from errors import UserError  # noqa: E402
from files import append_line, read_appended, write_atomic  # noqa: E402
from patterns import expand_agents, topology  # noqa: E402
from recursion import system_from_args  # noqa: E402

from tqdm import tqdm  # noqa: E402

CARRIED = 0.9  # a payload length counts as carried at >= 90% exact match
# The progress bar counts work in units of about one stage-1 step (0.7 s on 2 CPU cores), so its ETA holds across
# stages: a stage-2 step costs about 4 (it runs both agents and back-propagates through the receiver), reading one
# held-out row back under one control about 0.1.
STAGE2_UNITS, ANSWER_UNITS = 4, 0.1
OURS = ("cells.jsonl", "rows.jsonl", "capacity.md", "capacity.png", "run.json")


def parser():
    p = cli.Parser(description="Channel capacity of the latent channel: k-symbol payloads, m latent steps, controls.",
                   epilog="example: python scripts/capacity.py --families digits --m-values 4 --k-values 1,2 "
                          "--steps 10   (a quick look)")
    cli.add_system_args(p)
    p.set_defaults(pattern="relay")
    cli.add_out_args(p)
    p.add_argument("--families", type=cli.list_of(str, list(tasks.FAMILIES), "family"), default=list(tasks.FAMILIES),
                   help="payload families: k digits, k words")
    p.add_argument("--m-values", type=cli.list_of(cli.positive_int, what="number of latent steps"),
                   default=[2, 4, 8, 16], help="latent steps m, one training each")
    p.add_argument("--k-values", type=cli.list_of(cli.positive_int, what="payload length"),
                   default=[1, 2, 3, 4, 5, 6], help="payload lengths k, mixed in every training")
    p.add_argument("--inner-steps", type=cli.positive_int, default=200,
                   help="stage 1: optimizer steps of the sender's inner link, once per family")
    p.add_argument("--inner-lr", type=cli.learning_rate, default=3e-3, help="stage 1: peak learning rate")
    p.add_argument("--steps", type=cli.positive_int, default=40, help="stage 2: optimizer steps per (family, m)")
    p.add_argument("--batch-size", type=cli.positive_int, default=8, help="rows per step")
    p.add_argument("--lr", type=cli.learning_rate, default=2e-3, help="stage 2: peak learning rate (AdamW)")
    p.add_argument("--warmup", type=cli.count, default=5, help="linear warm-up steps before the cosine decay")
    p.add_argument("--eval-rows", type=cli.positive_int, default=16,
                   help="held-out payloads per k (fewer where the split has fewer: of the 10 one-digit payloads, 3 are held out)")
    p.add_argument("--max-new-tokens", type=cli.new_tokens, default=20,
                   help="most tokens the last agent writes, and the length its training targets are cut to (the "
                        "longest, 6 words in \\boxed{}, is 12)")
    return p


def check_out(a):
    """The run folder: empty, or --resume (a finished (family, m) is skipped, a cut one continues), or --overwrite
    (our files go, nothing else)."""
    os.makedirs(a.out, exist_ok=True)
    ours = lambda n: n in OURS or n.split("-")[0] in tasks.FAMILIES
    entries = [n for n in os.listdir(a.out) if not n.startswith(".tmp-")]
    if a.overwrite:
        if others := [n for n in entries if not ours(n)]:
            raise UserError(f"--overwrite: '{a.out}' holds files that are not a capacity run's ({others[0]}); "
                            f"pick another --out")
        for n in entries:
            path = os.path.join(a.out, n)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    elif entries and not a.resume:
        raise UserError(f"--out '{a.out}' already holds a run; continue it with --resume, replace it with --overwrite, "
                        f"or pick another --out")
    settings = {k: getattr(a, k) for k in ("agents", "pattern", "link_variant", "seed", "inner_steps", "inner_lr",
                                           "steps", "batch_size", "lr", "warmup", "eval_rows", "k_values",
                                           "max_new_tokens")}
    run = os.path.join(a.out, "run.json")
    if a.resume and os.path.exists(run):
        with open(run) as f:
            old = json.load(f)
        if diff := [k for k in settings if old.get(k) != settings[k]]:
            raise UserError(f"--resume: '{a.out}' was run with other settings ({diff[0]}: {old.get(diff[0])!r} then, "
                            f"{settings[diff[0]]!r} now); pass --overwrite or another --out")
    write_atomic(run, json.dumps(settings, indent=1))


def train_rows(family, ks, seed, per_k=1000):
    """Every payload length mixed in one training set (trainer batches draw from it by seed and step)."""
    return [r for k in ks for r in tasks.payload_rows(family, k, per_k, "train", seed)]


def held_rows(family, ks, n, seed):
    return [r for k in ks for r in tasks.payload_rows(family, k, n, "held-out", seed)]


def training_args(a, folder, stage, steps, lr):
    return argparse.Namespace(out=folder, stage=stage, agents=a.agents, steps=steps, lr=lr, warmup=a.warmup,
                              batch_size=a.batch_size, seed=a.seed, ckpt_every=20, log_every=steps,
                              resume=os.path.exists(os.path.join(folder, "latest")), max_target_tokens=a.max_new_tokens)


def stage1(system, family, rows, a, bar):
    """The sender's inner link for this family (once, whatever m); its links are the start of every m."""
    folder = os.path.join(a.out, f"{family}-inner")
    done = checkpoint_run(folder)  # checked; None before the first checkpoint
    if not os.path.exists(os.path.join(folder, "links.json")) or done is None or done["step"] < a.inner_steps:
        fresh_links(system, a.seed)
        losses = train_sender(system, rows, progress=step_bar(bar, family, "inner"),
                              args=training_args(a, folder, f"capacity {family} inner", a.inner_steps, a.inner_lr))
        tqdm.write(f"{family}, stage 1 (inner link): cosine loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return os.path.join(folder, "links")


def answer_units(rows):
    return max(1, round(ANSWER_UNITS * rows))


def step_bar(bar, family, what, units=1):
    def progress(step, loss):
        bar.update(units)
        bar.set_postfix_str(f"{family} {what} loss {loss:.3f}")
    return progress


def run_cell(system, family, train, held, m, inner, a, bar):
    """Stage 2 for one (family, m) from the stage-1 links, then every held-out row read back under every control;
    returns (cell lines, rows)."""
    t0 = time.time()
    system.load_links(inner)  # the stage-1 inner link and the untrained outer link: the same start for every m
    targs = training_args(a, os.path.join(a.out, f"{family}-m{m}"), f"capacity {family} m={m}", a.steps, a.lr)
    losses = train_reader(system, train, m, targs, step_bar(bar, family, f"m={m}", STAGE2_UNITS))
    trained_s, t1 = time.time() - t0, time.time()
    thoughts = thoughts_of(system, held, m, 16)
    recs = []
    for control in CONTROLS:
        recs += [dict(r, m=m) for r in read_back(system, held, thoughts, control, a.max_new_tokens)]
        bar.update(answer_units(len(held)))
    lines = []
    for k in a.k_values:
        for control in CONTROLS:
            mine = [r for r in recs if r["k"] == k and r["control"] == control]
            lines.append(dict(family=family, m=m, k=k, control=control, n=len(mine),
                              accuracy=sum(r["correct"] for r in mine) / max(1, len(mine)),
                              partner_rate=sum(r["pred"] == r["partner"] for r in mine) / max(1, len(mine)),
                              chance=2 ** -tasks.bits(family, k), bits=tasks.bits(family, k), steps=a.steps,
                              inner_steps=a.inner_steps, loss_first=losses[0], loss_last=losses[-1],
                              train_seconds=round(trained_s, 1), eval_seconds=round(time.time() - t1, 1)))
    tqdm.write(f"{family} m={m}: answer loss {losses[0]:.3f} -> {losses[-1]:.3f}; held-out exact match by k "
               + " ".join(f"{l['k']}:{l['accuracy']:.0%}" for l in lines if l["control"] == "trained")
               + f" ({trained_s:.0f} s training, {time.time() - t1:.0f} s reading back)")
    return lines, recs


def carried(lines, family, m):
    """The largest k read back at >= CARRIED through the trained channel (0 when none), and its bits per step."""
    ok = [l["k"] for l in lines if l["family"] == family and l["m"] == m and l["control"] == "trained"
          and l["accuracy"] >= CARRIED]
    k = max(ok, default=0)
    return k, (tasks.bits(family, k) / m if k else 0.0)


def table(lines, a):
    """The capacity table (markdown): trained accuracy per k, the controls' mean over k, largest k, bits per step."""
    ks = a.k_values
    out = ["| family | m | " + " | ".join(f"k={k}" for k in ks) + " | shuffled (partner's) | zeroed | largest k >= "
           "90% | bits / latent step | train s |", "|" + "---|" * (len(ks) + 7)]
    for family in a.families:
        for m in a.m_values:
            cell = [l for l in lines if l["family"] == family and l["m"] == m]
            if not cell:
                continue
            acc = {(l["k"], l["control"]): l for l in cell}
            mean = lambda c, key="accuracy": sum(acc[k, c][key] for k in ks) / len(ks)
            k, b = carried(lines, family, m)
            out.append(f"| {family} | {m} | " + " | ".join(f"{acc[k_, 'trained']['accuracy']:.0%}" for k_ in ks)
                       + f" | {mean('shuffled'):.0%} ({mean('shuffled', 'partner_rate'):.0%}) | {mean('zeroed'):.0%} "
                         f"| {k or '-'} | {b:.2f} | {cell[0]['train_seconds']:.0f} |")
    n = {(l["family"], l["k"]): l["n"] for l in lines}
    out.append("\nHeld-out rows per k: " + "; ".join(f"{f} " + ", ".join(f"k={k}: {n.get((f, k), 0)}" for k in ks)
                                                   for f in a.families) + ". Chance: 1/10^k (digits), 1/32^k (words).")
    return "\n".join(out) + "\n"


def plot(lines, a, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib); no plot written")
        return
    fig, axes = plt.subplots(1, len(a.families), figsize=(5 * len(a.families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], a.families):
        for m in a.m_values:
            for control, style in [("trained", "-o"), ("shuffled", ":")]:
                pts = sorted((l["k"], l["accuracy"]) for l in lines
                             if l["family"] == family and l["m"] == m and l["control"] == control)
                if pts:
                    ax.plot(*zip(*pts), style, label=f"m={m}" if control == "trained" else None,
                            color=f"C{a.m_values.index(m)}", alpha=1 if control == "trained" else 0.5)
        ax.axhline(CARRIED, color="grey", lw=0.5)
        ax.set(title=f"{family} (dotted: shuffled latents)", xlabel="payload length k",
               ylabel="held-out exact match", ylim=(-0.03, 1.03), xticks=a.k_values)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def capacity(a):
    a.out = a.out or os.path.join("runs", "capacity")
    topology(a.pattern, len(expand_agents(a.agents, a.pattern)[0]))  # e.g. relay takes 2 agents: said before any work
    check_out(a)  # before any model loads
    system = system_from_args(argparse.Namespace(**dict(vars(a), links=None)))
    cells_path, rows_path = os.path.join(a.out, "cells.jsonl"), os.path.join(a.out, "rows.jsonl")
    lines = read_appended(cells_path) if os.path.exists(cells_path) else []
    done = {(l["family"], l["m"]) for l in lines}
    if os.path.exists(rows_path):  # rows of a cell cut before its lines were written are dropped
        rows = read_appended(rows_path)
        keep = [r for r in rows if (r["family"], r["m"]) in done]
        if len(keep) < len(rows):
            write_atomic(rows_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    todo = [(f, m) for f in a.families for m in a.m_values if (f, m) not in done]
    held = {f: held_rows(f, a.k_values, a.eval_rows, a.seed) for f in a.families}
    bar = tqdm(total=sum(STAGE2_UNITS * a.steps + len(CONTROLS) * answer_units(len(held[f])) for f, _ in todo)
               + a.inner_steps * len({f for f, _ in todo}), unit="unit", dynamic_ncols=True, desc="capacity")
    t0, inner, train = time.time(), {}, {}
    with open(cells_path, "a", encoding="utf-8") as cf, open(rows_path, "a", encoding="utf-8") as rf:
        for family, m in todo:
            if family not in inner:
                train[family] = train_rows(family, a.k_values, a.seed)
                inner[family] = stage1(system, family, train[family], a, bar)
            new, recs = run_cell(system, family, train[family], held[family], m, inner[family], a, bar)
            for r in recs:
                append_line(rf, r)
            for l in new:  # the cell counts as done once its lines are on disk
                append_line(cf, l)
            lines += new
    bar.close()
    text = table(lines, a)
    write_atomic(os.path.join(a.out, "capacity.md"), text)
    print("\n" + text)
    for family in a.families:
        print(f"{family}: " + "; ".join(f"m={m} carries k={carried(lines, family, m)[0]} "
                                        f"({carried(lines, family, m)[1]:.2f} bits/step)" for m in a.m_values))
    print(f"{len(todo)} trainings of {a.steps} steps in {time.time() - t0:.0f} s; table: "
          f"{os.path.join(a.out, 'capacity.md')}, rows: {rows_path}")
    plot(lines, a, os.path.join(a.out, "capacity.png"))


def main(argv=None):
    return cli.main(parser(), capacity, argv)


if __name__ == "__main__":
    sys.exit(main())

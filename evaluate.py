"""
Evaluate the methods on one benchmark with strict scoring (benchmarks.py, scoring.py; code runs in sandbox.py):
single agent, single agent with a LoRA adapter or full fine-tuned weights (train_single.py), Recursive-TextMAS (text)
and RecursiveMAS (latent), all on the same loop.

    python evaluate.py --agents smollm --method single --benchmark gsm8k --limit 20
    python evaluate.py --agents smollm,smollm --method latent --benchmark gsm8k --limit 20 --links runs/outer/links
    python evaluate.py --compare single,text,latent --agents smollm,smollm --benchmark gsm8k --limit 5

Each question's row (question, every text the agents wrote, prediction, gold, verdict, the rule that decided, tokens,
seconds) is appended to OUT/<name>.jsonl and flushed to disk as soon as it is scored; <name> names the benchmark, the
method, the agents and the links / adapter / weights, so runs never overwrite each other. OUT/<name>.settings.json
holds the settings (--resume checks them), OUT/<name>.summary.json the summary. m and r are whatever you pass: never
pick them by looking at these numbers (use a dev split).
"""
import argparse
import hashlib
import json
import math
import os
import re
import statistics
import sys

from collections import Counter

import torch
from tqdm import tqdm

import cli
import moa
import protocol
import textgrad
from recursion import system_from_args
from baselines import trained_backbone
from benchmarks import BENCHMARKS, INSTRUCTION, judge_answer, load_benchmark, score
from errors import UserError
from files import append_line, read_appended, write_atomic
from loading import load_backbone, pick_device, pick_dtype
from patterns import expand_agents

METHODS = ["single", "lora", "full", "moa", "textgrad", "text", "latent"]
MODE = {"single": "single", "lora": "single", "full": "single", "text": "text", "latent": "latent"}  # System.run's

KEPT = ("limit", "batch_size")  # settings a --resume may change


def wilson(k, n, z=1.96):
    if n == 0:
        return 0.0, 0.0
    p = k / n
    den = 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / den, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def tag(path):
    """'runs/outer/links' -> 'links-1a2b3c4d': the name plus a hash of its files' paths, sizes and mtimes (a
    retrained checkpoint at the same path gets a new tag). None when nothing is there."""
    files = [path + e for e in (".safetensors", ".json") if os.path.isfile(path + e)]
    if os.path.isdir(path):
        files += sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    elif os.path.isfile(path):
        files.append(path)
    if not files:
        return None
    h = hashlib.sha1()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return f"{os.path.basename(os.path.normpath(path))}-{h.hexdigest()[:8]}"


def safe(name):
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name)[:200]


def run_settings(a, method, kind, tags):
    """Everything that decides a run's rows (what --resume compares), and its file stem."""
    names, pattern = expand_agents(a.agents, a.pattern)
    used = names if MODE.get(method) != "single" else names[-1:]
    proto = protocol.settings(a.protocol, a.benchmark, kind)
    pick = lambda k: protocol.pick(a, proto, k)
    samples = pick("samples")
    temperature = pick("temperature")
    temperature = temperature if temperature is not None else (protocol.SAMPLING_TEMPERATURE if samples > 1 else 0.0)
    st = dict(benchmark=a.benchmark, method=method, agents=used, pattern=pattern, protocol=a.protocol,
              max_new_tokens=pick("max_new_tokens"), temperature=temperature, top_p=pick("top_p"), samples=samples,
              seeds=[a.seed + i for i in range(pick("seeds"))], judge=a.judge,
              final_answer_tokens=pick("final_answer_tokens"), seconds_per_test=pick("test_timeout"))
    name = f"{a.benchmark}-{method}-" + "+".join(os.path.basename(n).removesuffix(".gguf") for n in used)
    if method in ("text", "latent"):
        st.update(rounds=a.rounds)
        name += f"-r{a.rounds}"
    if method == "latent":
        st.update(latent_steps=a.latent_steps, link_variant=a.link_variant, links=tags.get("links") or "untrained")
        name += f"m{a.latent_steps}-links={st['links']}"
    if method == "moa":
        st.update(moa_layers=a.moa_layers)
        name += f"-L{a.moa_layers}"
    if method == "textgrad":
        st.update(textgrad_steps=a.textgrad_steps)
        name += f"-T{a.textgrad_steps}"
    if method in ("lora", "full"):
        st[{"lora": "adapter", "full": "weights"}[method]] = tags[method]
        name += f"-{'adapter' if method == 'lora' else 'weights'}={tags[method]}"
    if a.protocol != "quick":
        name += f"-{a.protocol}"
    if a.judge:
        name += f"-judge={os.path.basename(a.judge)}"
    return st, os.path.join(a.out, safe(name))


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=1, default=str, ensure_ascii=False))


def settings_line(st, a):
    """The one line evaluate.py prints before a run: every setting that decides its rows."""
    unused = {"latent": "", "text": " (m unused: text)", "moa": f" (unused: MoA, {st.get('moa_layers')} layers)",
              "textgrad": f" (unused: TextGrad, {st.get('textgrad_steps')} steps)"}.get(st["method"],
                                                                                      " (unused: single agent)")
    seeds = len(st["seeds"])
    metric = f"pass@{st['samples']}" if st["samples"] > 1 else "accuracy"
    ending = f"+{st['final_answer_tokens']} tokens" if st["final_answer_tokens"] else "off"
    return (f"settings ({st['protocol']} protocol, {st['benchmark']}, {st['method']}): budget {st['max_new_tokens']}, "
            f"T {st['temperature']:g}, top-p {st['top_p']:g}, r {a.rounds}, m {a.latent_steps}{unused}, "
            f"{seeds} seed{'s' if seeds > 1 else ''}, {metric}, 'Final Answer:' ending {ending}, "
            f"{st['seconds_per_test']:g} s per test case")


def make_row(it, recs, scored, method):
    """One readable row: the question, what the agents wrote, the verdict and the rule that decided it;
    `continued`: the final answer hit its budget and got the 'Final Answer:' ending (recursion.write_answer)."""
    tokens = {}
    for r in recs:
        for k, v in r["tokens"].items():
            tokens[k] = tokens.get(k, 0) + v / len(recs)
    pred, _, extra = scored[0]
    row = dict(id=it["id"], method=method, question=it["question"], texts=recs[0]["written"], prediction=pred,
               gold=it["gold"] if it["kind"] not in ("code", "lcb") else None, correct=any(s[1] for s in scored),
               rule=extra.get("rule", "tests"), tokens=tokens, latent_steps=recs[0]["latent_steps"],
               seconds=sum(r["seconds"] for r in recs), continued=recs[0]["continued"],
               **{k: v for k, v in extra.items() if k != "rule"})
    row.update({"tool_calls": recs[0]["tool_calls"]} if recs[0].get("tool_calls") else {})
    if len(recs) > 1:
        row["samples"] = [dict(text=r["text"], prediction=s[0], correct=s[1], rule=s[2].get("rule", "tests"),
                               continued=r["continued"])
                          for r, s in zip(recs, scored)]
    return row


def judged(judge, it, pred, ok, extra):
    """The LLM judge's verdict replaces exact match (which stays in the row)."""
    yes, text = judge_answer(judge, it["question"], it["gold"], pred or "")
    return yes, dict(extra, exact_match=ok, judge=text, rule="llm judge")


def answerer(system, method, st, a):
    """questions -> one record per question, as `method` answers: System.run's modes, MoA or TextGrad."""
    gen = dict(max_new_tokens=st["max_new_tokens"], temperature=st["temperature"], top_p=st["top_p"])
    if method == "moa":
        return lambda qs: moa.run(system, qs, st["moa_layers"], st["final_answer_tokens"], **gen)
    if method == "textgrad":
        return lambda qs: textgrad.run(system, qs, st["textgrad_steps"], st["final_answer_tokens"], **gen)
    return lambda qs: system.run(qs, MODE[method], a.rounds, a.latent_steps, final_answer=st["final_answer_tokens"],
                                 **gen)


def vote(it, rec, seconds, unsafe):
    """(prediction, correct, extra) of a record. TextGrad's (with candidates, textgrad.run) are all scored and the
    most common prediction wins, the latest on a tie (code: the last candidate; programs do not vote)."""
    if "candidates" not in rec or it["kind"] in ("code", "lcb"):
        return score(it, rec["text"], seconds, unsafe)
    scored = [score(it, t, seconds, unsafe) for t in rec["candidates"]]
    counts = Counter(s[0] for s in scored if s[0] is not None)
    if not counts:
        return scored[-1]
    pred, ok, extra = next(s for s in reversed(scored) if counts.get(s[0]) == max(counts.values()))
    return pred, ok, dict(extra, votes=dict(counts))


def evaluate(system, items, st, stem, a, judge=None):
    """Run (or continue) one method on the items for every seed; each row is on disk as soon as it is scored.
    Returns the rows of these items and seeds (those from before a --resume included)."""
    path, method, k = stem + ".jsonl", st["method"], st["samples"]
    answer = answerer(system, method, st, a)
    old = read_appended(path) if a.resume and os.path.exists(path) else []
    key = lambda seed, id_: (seed, json.dumps(id_))
    done = {key(r["seed"], r["id"]) for r in old}
    write_json(stem + ".settings.json", st)
    total = len(items) * len(st["seeds"])
    wanted = {key(s, it["id"]) for s in st["seeds"] for it in items}
    right = sum(r["correct"] for r in old if key(r["seed"], r["id"]) in wanted)
    bar = tqdm(total=total, initial=len(wanted & done), desc=f"{st['benchmark']} {method}", unit="q",
               dynamic_ncols=True)
    with open(path, "a" if a.resume else "w", encoding="utf-8") as f:
        for seed in st["seeds"]:
            todo = [(pos, it) for pos, it in enumerate(items) if key(seed, it["id"]) not in done]
            for start in range(0, len(todo), a.batch_size):
                chunk = todo[start:start + a.batch_size]
                torch.manual_seed(protocol.seed_of(seed, chunk[0][0]))  # (seed, first question): resumable
                batch = [it for _, it in chunk]
                questions = [f"{it['question']}\n\n{INSTRUCTION[it['kind']]}".strip() for it in batch]
                samples = [answer(questions) for _ in range(k)]
                for j, it in enumerate(batch):
                    recs = [dict(s[j], seconds=s[j]["seconds"] / len(batch)) for s in samples]  # batch time, shared
                    scored = [vote(it, r, st["seconds_per_test"], a.unsafe_exec) for r in recs]
                    if judge is not None and it["kind"] == "qa":
                        scored = [(p, *judged(judge, it, p, ok, ex)) for p, ok, ex in scored]
                    row = dict(seed=seed, **make_row(it, recs, scored, method))
                    append_line(f, row)  # on disk before the next question starts
                    right += row["correct"]
                    bar.update(1)
                    bar.set_postfix(acc=f"{right / bar.n:.3f}")
    bar.close()
    return [r for r in read_appended(path) if key(r["seed"], r["id"]) in wanted]


def summarize(rows, st, extra):
    """Accuracy (mean over seeds, with their standard deviation), a Wilson 95% CI over all rows, cost per question."""
    n, k = len(rows), sum(r["correct"] for r in rows)
    per_seed = [statistics.mean(r["correct"] for r in rows if r["seed"] == s) for s in st["seeds"]
                if any(r["seed"] == s for r in rows)]
    lo, hi = wilson(k, n)
    s = dict(benchmark=st["benchmark"], method=st["method"], agents=",".join(st["agents"]),
             n=len({json.dumps(r["id"]) for r in rows}), rows=n, correct=k,
             accuracy=statistics.mean(per_seed) if per_seed else 0.0,
             std=statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0, per_seed=per_seed, ci95=[lo, hi],
             metric=f"pass@{st['samples']}" if st["samples"] > 1 else "accuracy",
             mean_tokens=sum(sum(r["tokens"].values()) for r in rows) / max(n, 1),
             mean_latent_steps=sum(r["latent_steps"] for r in rows) / max(n, 1),
             mean_seconds=sum(r["seconds"] for r in rows) / max(n, 1), settings=dict(st, **extra))
    if rows and "f1" in rows[0]:
        s["f1"] = sum(r["f1"] for r in rows) / n
    return s


def print_table(summaries):
    print(f"\n{'benchmark':14} {'method':8} {'agents':16} {'n':>4} {'acc':>6} {'± sd':>6} {'95% CI':>13} "
          f"{'tokens':>7} {'latent':>6} {'s/q':>7}")
    for s in summaries:
        print(f"{s['benchmark']:14} {s['method']:8} {s['agents'][:16]:16} {s['n']:4d} {s['accuracy']:6.3f} "
              f"{s['std']:6.3f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] {s['mean_tokens']:7.1f} "
              f"{s['mean_latent_steps']:6.0f} {s['mean_seconds']:7.2f}")
    if len({s["metric"] for s in summaries}) == 1 and summaries[0]["metric"] != "accuracy":
        print(f"(acc is {summaries[0]['metric']})")


def plot(summaries, path):
    """Accuracy with its 95% CI and tokens per question, one bar per method (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install matplotlib); no PNG written")
        return
    names = [s["method"] for s in summaries]
    acc = [s["accuracy"] for s in summaries]
    err = [[a - s["ci95"][0] for a, s in zip(acc, summaries)], [s["ci95"][1] - a for a, s in zip(acc, summaries)]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.bar(names, acc, yerr=err, capsize=4)
    ax1.set_ylabel(f"{summaries[0]['metric']} (95% CI)")
    ax2.bar(names, [s["mean_tokens"] for s in summaries])
    ax2.set_ylabel("generated tokens per question")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=30)  # seven method names side by side would overlap
    fig.suptitle(f"{summaries[0]['benchmark']}, n={summaries[0]['n']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def build_system(a, method):
    """The System a method runs on; lora / full: the final agent's backbone replaced by the trained one."""
    system = system_from_args(argparse.Namespace(**dict(vars(a), links=a.links if method == "latent" else None)))
    if method in ("lora", "full"):
        path = a.adapter if method == "lora" else a.weights
        system.backbones[-1] = trained_backbone(system.backbones[-1], method, path)
    return system


# ---- the command line ---------------------------------------------------------------------------------------

def parser():
    p = cli.Parser(description="Evaluate single / lora / full / text / latent on a benchmark with strict scoring.",
                   epilog="example: python evaluate.py --compare single,text,latent --agents smollm,smollm "
                          "--benchmark gsm8k --limit 5")
    cli.add_answering_args(p)
    cli.add_out_args(p)
    p.add_argument("--method", default="single", choices=METHODS, help="what answers the questions")
    p.add_argument("--compare", type=cli.list_of(str, METHODS, "method"), default=None,
                   help="e.g. single,text,latent: one table, same questions")
    p.add_argument("--benchmark", default="gsm8k", choices=BENCHMARKS, help="which questions")
    p.add_argument("--protocol", default="quick", choices=["quick", "paper"],
                   help="quick: greedy, 256 tokens, 1 seed, r=2, m=8; paper: the paper's App. B.3 (sampling, budgets, "
                        "5 seeds, AIME pass@10, 'Final Answer:' ending) with r=3, m=32 (docs/method.md §9)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (train_single.py) for method lora")
    p.add_argument("--weights", default=None, help="full fine-tuned weights folder (train_single.py) for method full")
    p.add_argument("--limit", type=cli.positive_int, default=None, help="first N questions")
    p.add_argument("--samples", type=cli.positive_int, default=None, help="k samples per question: pass@k")
    p.add_argument("--seeds", type=cli.positive_int, default=None, help="number of seeds (--seed, --seed+1, ...)")
    p.add_argument("--final-answer-tokens", type=cli.checked(int, lambda v: 0 <= v <= 4096, "a number of tokens in "
                                                                                            "0..4096"), default=None,
                   help="a final answer cut at its budget gets 'Final Answer:' and this many more tokens (0: off); "
                        "default: the protocol's (quick 0, paper 64, code 256)")
    p.add_argument("--test-timeout", type=cli.seconds, default=None,
                   help="seconds for each code test case; default: the protocol's (10)")
    p.add_argument("--batch-size", type=cli.positive_int, default=4, help="questions per batch")
    p.add_argument("--moa-layers", type=cli.positive_int, default=moa.LAYERS,
                   help="Mixture-of-Agents: layers (every agent proposes in the first L-1, the final agent aggregates "
                        "in the last; the MoA paper's main setup)")
    p.add_argument("--textgrad-steps", type=cli.count, default=textgrad.STEPS,
                   help="TextGrad: evaluate-feedback-rewrite iterations (the TextGrad repository's default)")
    p.add_argument("--gpqa-path", default=None, help="GPQA-Diamond test.jsonl (or set GPQA_PATH)")
    p.add_argument("--bamboogle-path", default=None, help="Bamboogle JSONL of {question, answer} (or BAMBOOGLE_PATH)")
    p.add_argument("--lcb-path", default=None, help="LiveCodeBench JSONL in its published format (or LCB_PATH)")
    p.add_argument("--unsafe-exec", action="store_true",
                   help="UNSAFE: where no sandbox (bubblewrap) is available, run generated code anyway, unisolated")
    p.add_argument("--judge", default=None, help="a model that judges QA answers yes/no (default: exact match)")
    p.add_argument("--plot", action="store_true", help="--compare: also write OUT/<benchmark>-compare.png")
    return p


def parse(argv):
    """Parse and check everything that can be checked without a model; returns (args, items, [(settings, stem)])."""
    p = parser()
    a = p.parse_args(argv)
    a.out = a.out or os.path.join("runs", "eval")
    proto = protocol.settings(a.protocol, a.benchmark, None)
    a.rounds = protocol.pick(a, proto, "rounds")  # the protocol's r and m, unless given
    a.latent_steps = protocol.pick(a, proto, "latent_steps")
    try:
        items = load_benchmark(a.benchmark, a.gpqa_path, a.bamboogle_path, a.lcb_path)[:a.limit]
        expand_agents(a.agents, a.pattern)
    except UserError as e:
        p.error(str(e))
    if a.judge and items[0]["kind"] != "qa":
        p.error(f"--judge grades short answers (hotpotqa, bamboogle), not {a.benchmark}")
    tags = {}
    for name, flag, path in [("links", "--links", a.links), ("lora", "--adapter", a.adapter),
                             ("full", "--weights", a.weights)]:
        if path:
            tags[name] = tag(path) or p.error(f"{flag} {path}: nothing there")
    runs = []
    for method in a.compare or [a.method]:
        if method in ("lora", "full") and method not in tags:
            p.error(f"method {method} needs {'--adapter' if method == 'lora' else '--weights'} DIR (from train_single.py)")
        st, stem = run_settings(a, method, items[0]["kind"], tags)
        f = stem + ".jsonl"
        if os.path.exists(f) and os.path.getsize(f) and not (a.resume or a.overwrite):
            p.error(f"{f} exists; pass --resume to continue it or --overwrite to replace it")
        if a.resume and os.path.exists(f) and os.path.getsize(f):
            try:
                with open(stem + ".settings.json") as fh:
                    old = json.load(fh)
            except (OSError, json.JSONDecodeError):
                p.error(f"--resume: {stem}.settings.json is missing or unreadable; pass --overwrite to start again")
            diff = [f"{k}: {old.get(k)!r} then, {st.get(k)!r} now" for k in sorted(set(old) | set(st))
                    if old.get(k) != st.get(k)]
            if diff:
                p.error(f"--resume: {f} was run with other settings ({'; '.join(diff)}); pass --overwrite or --out")
        runs.append((st, stem))
    return a, items, runs


def run(a, items, runs):
    for st, _ in runs:
        print(settings_line(st, a), flush=True)
    os.makedirs(a.out, exist_ok=True)
    summaries = []
    device = pick_device(a.device)
    judge = load_backbone(a.judge, device, pick_dtype(a.dtype, device)) if a.judge else None
    for st, stem in runs:
        system = build_system(a, st["method"])
        rows = evaluate(system, items, st, stem, a, judge)
        extra = dict(limit=a.limit, batch_size=a.batch_size, device=str(device), fast=a.fast, rows=stem + ".jsonl")
        summary = summarize(rows, st, extra)
        write_json(stem + ".summary.json", summary)
        summaries.append(summary)
    print_table(summaries)
    for st, stem in runs:
        print(f"rows: {stem}.jsonl   summary: {stem}.summary.json")
    if a.plot:
        plot(summaries, os.path.join(a.out, f"{a.benchmark}-compare.png"))


def main(argv=None):
    return cli.guarded(run, *parse(argv))


if __name__ == "__main__":
    sys.exit(main())

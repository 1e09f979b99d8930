"""
Benchmarks with strict scoring (scoring.py) and sandboxed code execution (sandbox.py), for the three methods on the
same loop: single agent, Recursive-TextMAS (text) and RecursiveMAS (latent).

    python evaluate.py --agents smollm --method single --benchmark gsm8k --limit 20
    python evaluate.py --agents smollm,smollm --method latent --benchmark gsm8k --limit 20 --links runs/outer/links

Writes OUT/<benchmark>-<method>.jsonl (one row per question) and OUT/<benchmark>-<method>.summary.json, and prints a
summary table. m and r are whatever you pass: never pick them by looking at these numbers (use a dev split).
"""
import argparse
import ast
import gzip
import json
import math
import os
import random
import sys
import time

import torch

import scoring
from agents import PRESETS, TOPOLOGIES, system_from_args
from fast import add_argument as add_fast_argument
from links import VARIANTS
from model import UserError
from sandbox import run_tests

HERE = os.path.dirname(os.path.abspath(__file__))
D = os.path.join(HERE, "data")
GPQA_DEFAULT = os.path.join(HERE, "..", "shared", "data", "gpqa_diamond", "test.jsonl")

MATH = "Solve the problem. Put the final answer in \\boxed{}."
CHOICE = "Answer with the letter of the correct option, written as: The answer is (X)."
CODE = "Write the complete Python code in one ```python block."
QA = "Answer with a short phrase. Put the final answer in \\boxed{}."


# ---- benchmarks: each loader returns items {id, question, gold, kind, [tests]} ---------------------------------

def _jsonl(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(l) for l in f if l.strip()]


def _options(opts):
    return "\n".join(f"{k}. {v}" for k, v in opts)


def load_benchmark(name, gpqa_path=None):
    if name == "gsm8k":
        return [dict(id=i, question=r["question"], gold=r["answer"].rsplit("####", 1)[1].strip().replace(",", ""),
                     kind="math") for i, r in enumerate(_jsonl(f"{D}/gsm8k/test.jsonl"))]
    if name in ("math500", "aime24", "aime25", "amc23"):
        return [dict(id=r.get("unique_id", r.get("id", i)), question=r["problem"], gold=str(r["answer"]), kind="math")
                for i, r in enumerate(_jsonl(f"{D}/{name}/test.jsonl"))]
    if name == "medqa":
        rows = _jsonl(f"{D}/medqa/test.jsonl")
        out = []
        for i, r in enumerate(rows):
            opts = r["options"] if isinstance(r["options"], dict) else ast.literal_eval(r["options"])
            out.append(dict(id=r.get("realidx", i), question=f"{r['question']}\n\n{_options(sorted(opts.items()))}",
                            gold=r["answer_idx"], kind="choice", letters="".join(sorted(opts))))
        return out
    if name == "arc_challenge":
        out = []
        for r in _jsonl(f"{D}/arc_challenge/ARC-Challenge-Test.jsonl"):
            ch = r["choices"] if isinstance(r["choices"], dict) else ast.literal_eval(r["choices"])
            labels = ch["label"]
            if labels[0].isdigit():  # a few rows use 1-4: map to letters
                gold = "ABCDE"[labels.index(r["answerKey"])]
                labels = list("ABCDE"[:len(labels)])
            else:
                gold = r["answerKey"]
            out.append(dict(id=r["id"], question=f"{r['question']}\n\n{_options(zip(labels, ch['text']))}",
                            gold=gold, kind="choice", letters="".join(labels)))
        return out
    if name == "gpqa_diamond":  # never shipped: read from the user's path
        path = gpqa_path or os.environ.get("GPQA_PATH") or GPQA_DEFAULT
        if not os.path.exists(path):
            raise UserError(f"GPQA-Diamond is not shipped with this repository; pass --gpqa-path to your test.jsonl")
        return [dict(id=i, question=r["question"], gold=r["answer"].strip(), kind="choice", letters="ABCD")
                for i, r in enumerate(_jsonl(path))]
    if name == "humaneval":
        return [dict(id=r["task_id"], question=f"Complete this Python function.\n\n```python\n{r['prompt']}```",
                     gold=r["canonical_solution"], kind="code", prompt=r["prompt"], entry_point=r["entry_point"],
                     tests=f"{r['test']}\ncheck({r['entry_point']})\n")
                for r in _jsonl(f"{D}/humaneval/HumanEval.jsonl.gz")]
    if name == "mbpp":  # the standard test split: task ids 11-510
        out = []
        for r in _jsonl(f"{D}/mbpp/mbpp.jsonl"):
            if not 11 <= int(r["task_id"]) <= 510:
                continue
            tests = r["test_list"] if isinstance(r["test_list"], list) else ast.literal_eval(r["test_list"])
            out.append(dict(id=r["task_id"], question=f"{r['text']}\nYour code should pass this test:\n{tests[0]}",
                            gold=r["code"], kind="code", prompt="",
                            tests=(r.get("test_setup_code") or "") + "\n" + "\n".join(tests) + "\n"))
        return out
    if name == "hotpotqa":
        with open(f"{D}/hotpotqa/hotpot_dev_v1_simplified.json") as f:
            return [dict(id=i, question=r["question"], gold=r["answer"], kind="qa") for i, r in enumerate(json.load(f))]
    raise UserError(f"unknown benchmark '{name}'; use one of {', '.join(BENCHMARKS)}")


BENCHMARKS = ["gsm8k", "math500", "aime24", "aime25", "amc23", "medqa", "arc_challenge", "gpqa_diamond", "humaneval",
              "mbpp", "hotpotqa"]
INSTRUCTION = {"math": MATH, "choice": CHOICE, "code": CODE, "qa": QA}


def score(item, text, timeout=10.0, unsafe=False):
    """-> (prediction, correct: bool, extra: dict)."""
    kind = item["kind"]
    if kind == "math":
        pred, ok = scoring.score_math(text, item["gold"])
        return pred, ok, {}
    if kind == "choice":
        pred, ok = scoring.score_choice(text, item["gold"], item.get("letters", "ABCD"))
        return pred, ok, {}
    if kind == "qa":
        pred = scoring.extract_qa(text)
        em, f1 = scoring.qa_scores(pred, item["gold"])
        return pred, em == 1.0, {"f1": f1}
    code = scoring.extract_code(text)
    if item.get("entry_point") and f"def {item['entry_point']}" not in code:
        code = item["prompt"] + code  # a bare function body continues the prompt
    res = run_tests(code, item["tests"], timeout=timeout, unsafe=unsafe)  # a pass needs the harness's fresh token
    return code[-400:], res.passed, {"timed_out": res.timed_out, "executed": res.executed,
                                     "error": (res.stderr.strip().splitlines() or [res.reason])[-1:]}


def wilson(k, n, z=1.96):
    if n == 0:
        return 0.0, 0.0
    p = k / n
    den = 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / den, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate single / text / latent on a benchmark with strict scoring.")
    p.add_argument("--agents", default="smollm", help=f"comma-separated models, or a preset: {', '.join(PRESETS)}")
    p.add_argument("--method", default="single", choices=["single", "text", "latent"])
    p.add_argument("--benchmark", default="gsm8k", choices=BENCHMARKS)
    p.add_argument("--pattern", default="sequential", choices=list(TOPOLOGIES))
    p.add_argument("--search-docs", default=None, help="JSONL of {title, text} passages for the deliberation <search> tool")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--latent-steps", type=int, default=8)
    p.add_argument("--links", default=None, help="link checkpoint (default: untrained links)")
    p.add_argument("--link-variant", default="2layer_ln_res", choices=VARIANTS)
    p.add_argument("--limit", type=int, default=None, help="first N questions")
    p.add_argument("--samples", type=int, default=1, help="k samples per question: pass@k (temperature 0.7 if k>1)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--timeout", dest="tool_timeout", type=float, default=10.0,
                   help="seconds per code sample (and per <python> tool call) in the sandbox")
    p.add_argument("--gpqa-path", default=None)
    p.add_argument("--unsafe-exec", action="store_true",
                   help="UNSAFE: where bubblewrap is missing, run generated code anyway, unisolated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/eval")
    add_fast_argument(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    a = p.parse_args(argv)
    try:
        items = load_benchmark(a.benchmark, a.gpqa_path)[:a.limit]
        temperature = a.temperature if a.temperature is not None else (0.7 if a.samples > 1 else 0.0)
        torch.manual_seed(a.seed)
        random.seed(a.seed)
        system = system_from_args(a)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, f"{a.benchmark}-{a.method}")
    rows, t0 = [], time.time()
    with open(stem + ".jsonl", "w") as f:
        for start in range(0, len(items), a.batch_size):
            batch = items[start:start + a.batch_size]
            questions = [f"{it['question']}\n\n{INSTRUCTION[it['kind']]}" for it in batch]
            samples = [system.run(questions, a.method, a.rounds, a.latent_steps, a.max_new_tokens, temperature)
                       for _ in range(a.samples)]
            for j, it in enumerate(batch):
                recs = [s[j] for s in samples]
                scored = [score(it, r["text"], a.tool_timeout, a.unsafe_exec) for r in recs]
                tokens = {}
                for r in recs:
                    for k, v in r["tokens"].items():
                        tokens[k] = tokens.get(k, 0) + v / len(recs)
                row = dict(id=it["id"], prediction=scored[0][0], gold=it["gold"] if it["kind"] != "code" else None,
                           correct=any(s[1] for s in scored), samples_correct=[s[1] for s in scored],
                           tokens=tokens, latent_steps=recs[0]["latent_steps"],
                           seconds=sum(r["seconds"] for r in recs) / len(batch), **scored[0][2])
                rows.append(row)
                f.write(json.dumps(row, default=str) + "\n")
            done = len(rows)
            acc = sum(r["correct"] for r in rows) / done
            print(f"[{done}/{len(items)}] accuracy so far {acc:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    summary = summarize(rows, a, temperature)
    with open(stem + ".summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    print_table([summary])
    print(f"rows: {stem}.jsonl   summary: {stem}.summary.json")
    return 0


def summarize(rows, a, temperature):
    n, k = len(rows), sum(r["correct"] for r in rows)
    lo, hi = wilson(k, n)
    s = dict(benchmark=a.benchmark, method=a.method, agents=a.agents, n=n, correct=k, accuracy=k / max(n, 1),
             ci95=[lo, hi], metric=f"pass@{a.samples}" if a.samples > 1 else "accuracy",
             mean_tokens=sum(sum(r["tokens"].values()) for r in rows) / max(n, 1),
             mean_latent_steps=sum(r["latent_steps"] for r in rows) / max(n, 1),
             mean_seconds=sum(r["seconds"] for r in rows) / max(n, 1),
             settings=dict(pattern=a.pattern, rounds=a.rounds, latent_steps=a.latent_steps, links=a.links,
                           link_variant=a.link_variant, samples=a.samples, temperature=temperature,
                           max_new_tokens=a.max_new_tokens, limit=a.limit, seed=a.seed, batch_size=a.batch_size))
    if rows and "f1" in rows[0]:
        s["f1"] = sum(r["f1"] for r in rows) / n
    return s


def print_table(summaries):
    print(f"\n{'benchmark':14} {'method':7} {'agents':16} {'n':>4} {'acc':>6} {'95% CI':>13} {'tokens':>7} "
          f"{'latent':>6} {'s/q':>6}")
    for s in summaries:
        print(f"{s['benchmark']:14} {s['method']:7} {s['agents'][:16]:16} {s['n']:4d} {s['accuracy']:6.3f} "
              f"[{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] {s['mean_tokens']:7.1f} {s['mean_latent_steps']:6.0f} "
              f"{s['mean_seconds']:6.2f}")


if __name__ == "__main__":
    sys.exit(main())

"""
The tables of a reproduction run (scripts/reproduce.sh): Table 3 (accuracy, every method on every benchmark), Table 2
(efficiency over r = 1, 2, 3) and Table 5 (training cost), from the files the run wrote, into OUT/tables.md.

    python scripts/tables.py runs/reproduce-paper-light
"""
import glob
import json
import os
import sys

METHODS = ["single", "lora", "full", "moa", "textgrad", "text", "latent"]


def table3(out):
    """Rows: methods; columns: benchmarks; cells: mean accuracy ± sd over seeds (pass@k where the protocol says)."""
    cells, benchmarks = {}, []
    for path in sorted(glob.glob(os.path.join(out, "eval", "*.summary.json"))):
        with open(path, encoding="utf-8") as f:
            s = json.load(f)
        benchmarks += [s["benchmark"]] if s["benchmark"] not in benchmarks else []
        cells[s["method"], s["benchmark"]] = f"{100 * s['accuracy']:.1f} ± {100 * s['std']:.1f}"
    lines = ["| method | " + " | ".join(benchmarks) + " |", "|---" * (len(benchmarks) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(cells.get((m, b), "—") for b in benchmarks) + " |"
              for m in METHODS if any((m, b) in cells for b in benchmarks)]
    return lines


def bench_tables(out):
    """Table 2 (end to end: seconds, tokens, ratios against text at the same r) and Table 5 (training cost)."""
    path = os.path.join(out, "bench", "bench.json")
    if not os.path.exists(path):
        return ["(no bench.json yet)"]
    with open(path, encoding="utf-8") as f:
        res = json.load(f)
    lines = [f"Measured on {res['machine']} ({res['agents']}, {res['dtype']}).", "",
             "| method | r | seconds | tokens | latent steps | speedup vs text | tokens vs text |", "|---" * 7 + "|"]
    for r in res.get("end_to_end", []):
        speed = f"{r['speedup_vs_text']:.2f}x" if "speedup_vs_text" in r else ""
        fewer = f"{-100 * r['token_reduction_vs_text']:+.1f}%" if "token_reduction_vs_text" in r else ""
        lines.append(f"| {r['mode']} | {r['rounds']} | {r['seconds']:.1f} | {r['tokens']} | {r['latent_steps']} | "
                     f"{speed} | {fewer} |")
    lines += ["", "| training (Table 5) | trainable | s/step | peak GB |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['trainable']:,} | {r['seconds_per_step']:.2f} | {r['peak_gb']:.2f} |"
              for r in res.get("training", []) if "trainable" in r]
    return lines


def main(out):
    text = "\n".join([f"# Reproduction: {out}", "", "## Table 3: accuracy (%, mean ± sd over seeds)", "",
                      *table3(out), "", "## Tables 2 and 5: efficiency and training cost", "", *bench_tables(out),
                      "", "Rows: eval/*.jsonl; per-benchmark plots: eval/*-compare.png; all numbers: bench/bench.json."])
    with open(os.path.join(out, "tables.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print("usage: python scripts/tables.py OUT  (a folder scripts/reproduce.sh wrote)", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])

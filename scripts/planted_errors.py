"""Plant errors by hand in the formulas behind the printed figures (evaluate.py, bench.py, gradprobe.py, the seeds of
protocol.py) and in the training safeguards (trainer.py, losses.py, checkpoints.py), one at a time, and check that
the tests of TESTS catch each: the file is changed, the named tests run, the file is put back (also on Ctrl-C or
kill -TERM). One line per planted error: caught (by which test), MISSED, or NOT PLANTED (its text is not in the file
once: the code moved; fix the plant).

    TEST_THREADS=1 python scripts/planted_errors.py            # all 74 (~7 minutes on 2 busy cores)
    TEST_THREADS=1 python scripts/planted_errors.py E1 T4      # some of them

Never run it while someone else works in the same checkout: it edits those files for a few seconds each."""
import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the figures, by hand; the course's test_a6_time_it_times_only_the_repeats checks bench.time_it
TESTS = ["tests/test_evaluate_figures.py", "tests/test_bench_figures.py", "tests/test_trainer_safeguards.py",
         "tests/test_course.py"]


def move_nonfinite_check_after_the_update(src):
    start = src.index("        if not torch.isfinite(loss):")
    end = src.index("            sys.exit(3)\n", start) + len("            sys.exit(3)\n")
    block, src = src[start:end], src[:start] + src[end:]
    at = src.index("        opt.step()\n") + len("        opt.step()\n")
    return src[:at] + block + src[at:]


# id, file, what is planted, old text, new text (or a function of the source), the tests (-k) that must catch it
PLANTS = [
    ("E1", "evaluate.py", "Wilson: wrong z (1.645, a 90% interval)",
     "def wilson(k, n, z=1.96):", "def wilson(k, n, z=1.645):", "wilson"),
    ("E2", "evaluate.py", "Wilson: denominator 1 + z²/n dropped",
     "den = 1 + z * z / n", "den = 1", "wilson"),
    ("E3", "evaluate.py", "Wilson: z²/4n² term dropped from the half-width",
     "p * (1 - p) / n + z * z / (4 * n * n)", "p * (1 - p) / n", "wilson"),
    ("E4", "evaluate.py", "Wilson: no clipping to [0, 1]",
     "return max(0.0, mid - half), min(1.0, mid + half)", "return mid - half, mid + half", "wilson"),
    ("E5", "evaluate.py", "Wilson: off by one in p = k / n",
     "p = k / n", "p = k / (n + 1)", "wilson"),
    ("E6", "evaluate.py", "summary CI over the questions instead of all rows",
     "lo, hi = wilson(k, n)", "lo, hi = wilson(k, len({json.dumps(r['id']) for r in rows}))", "summary"),
    ("E7", "evaluate.py", "sd over seeds with ddof 0",
     "std=statistics.stdev(per_seed)", "std=statistics.pstdev(per_seed)", "summary or seeds"),
    ("E8", "evaluate.py", "accuracy pooled over rows instead of the mean over seeds",
     "accuracy=statistics.mean(per_seed) if per_seed", "accuracy=k / n if per_seed", "seed"),
    ("E9", "evaluate.py", "tokens a question divided by the questions instead of the rows",
     'mean_tokens=sum(sum(r["tokens"].values()) for r in rows) / max(n, 1)',
     'mean_tokens=sum(sum(r["tokens"].values()) for r in rows) / max(len({json.dumps(r["id"]) for r in rows}), 1)',
     "summary"),
    ("E10", "evaluate.py", "seconds a question off by one",
     'mean_seconds=sum(r["seconds"] for r in rows) / max(n, 1)',
     'mean_seconds=sum(r["seconds"] for r in rows) / max(n - 1, 1)', "summary"),
    ("E11", "evaluate.py", "latent steps a question: the sum, not the mean",
     'mean_latent_steps=sum(r["latent_steps"] for r in rows) / max(n, 1)',
     'mean_latent_steps=sum(r["latent_steps"] for r in rows)', "summary"),
    ("E12", "evaluate.py", "table: the first seed's accuracy in the acc column",
     "{s['accuracy']:6.3f} \"", "{s['per_seed'][0]:6.3f} \"", "table"),
    ("E13", "evaluate.py", "table: the CI's lower end printed twice",
     "{s['ci95'][1]:.2f}]", "{s['ci95'][0]:.2f}]", "table"),
    ("E14", "evaluate.py", "pass@k: all samples right instead of any",
     "correct=any(s[1] for s in scored)", "correct=all(s[1] for s in scored)", "pass_at"),
    ("E15", "evaluate.py", "pass@k: the first sample only",
     "correct=any(s[1] for s in scored)", "correct=scored[0][1]", "pass_at"),
    ("E16", "evaluate.py", "tokens a question summed over the k samples, not averaged",
     "tokens[k] = tokens.get(k, 0) + v / len(recs)", "tokens[k] = tokens.get(k, 0) + v", "pass_at"),
    ("E17", "evaluate.py", "per-batch seed ignores the run's seed (every seed draws the same)",
     "protocol.seed_of(seed, chunk[0][0])", "protocol.seed_of(0, chunk[0][0])", "seeds"),
    ("E18", "evaluate.py", "per-batch seed shifted by one question",
     "protocol.seed_of(seed, chunk[0][0])", "protocol.seed_of(seed, chunk[0][0] + 1)", "seeds"),
    ("P1", "protocol.py", "seed and position added: (seed, position) pairs collide",
     "return seed * SEED_STRIDE + position", "return seed + position", "seeds or resume"),
    ("P2", "protocol.py", "another seed stride",
     "SEED_STRIDE = 1_000_003", "SEED_STRIDE = 1_000_033", "seeds or resume"),
    ("E19", "evaluate.py", "seeds start one past --seed",
     'seeds=[a.seed + i for i in range(pick("seeds"))]', 'seeds=[a.seed + i + 1 for i in range(pick("seeds"))]',
     "seeds"),
    ("E20", "evaluate.py", "a batch's seconds given to each of its questions whole",
     'seconds=s[j]["seconds"] / len(batch)', 'seconds=s[j]["seconds"]', "seeds"),
    ("E21", "evaluate.py", "pass@k metric named accuracy",
     'metric=f"pass@{st[\'samples\']}" if st["samples"] > 1 else "accuracy",\n             mean_tokens',
     'metric="accuracy",\n             mean_tokens', "pass_at"),
    ("B1", "bench.py", "speedup vs text swapped (latent / text)",
     'row["speedup_vs_text"] = text["seconds"] / row["seconds"]',
     'row["speedup_vs_text"] = row["seconds"] / text["seconds"]', "end_to_end"),
    ("B2", "bench.py", "token reduction vs text swapped",
     '1 - row["tokens"] / text["tokens"]', '1 - text["tokens"] / row["tokens"]', "end_to_end"),
    ("B3", "bench.py", "ratios against text at any r (the first text row)",
     'x["mode"] == "text" and x["rounds"] == row["rounds"]', 'x["mode"] == "text"', "end_to_end"),
    ("B4", "bench.py", "report: tokens vs text printed with the wrong sign",
     "{-100 * r['token_reduction_vs_text']:+.1f}%", "{100 * r['token_reduction_vs_text']:+.1f}%", "end_to_end"),
    ("B5", "bench.py", "rollout speedup swapped (KV / recompute)",
     "speedup=rc / kv", "speedup=kv / rc", "kv_versus"),
    ("B6", "bench.py", "KV ms a step off by one step",
     "kv_ms_per_step=1000 * kv / m", "kv_ms_per_step=1000 * kv / (m + 1)", "kv_versus"),
    ("B7", "bench.py", "rollout: worst of n instead of best",
     "kv = min(time_it(", "kv = max(time_it(", "kv_versus"),
    ("B8", "bench.py", "time_it times the warm-up too",
     "    (warmup or fn)()  # warm-up (kernels, allocator); a short call where the real one is long\n"
     "    sync(device)\n    t0 = time.perf_counter()\n",
     "    t0 = time.perf_counter()\n    (warmup or fn)()\n    sync(device)\n", "time_it or kv_versus"),
    ("B9", "bench.py", "time_it: the total, not the mean over repeats",
     "return (time.perf_counter() - t0) / repeats", "return time.perf_counter() - t0", "time_it"),
    ("B10", "bench.py", "bandwidth counts the bytes once (read, not written)",
     "return 2 * n / secs", "return n / secs", "bandwidth"),
    ("B11", "bench.py", "step bytes include the embeddings (and every other weight)",
     "list(m.layers.parameters()) + list(m.norm.parameters())", "list(m.parameters())", "step_bytes"),
    ("B12", "bench.py", "a step exactly on its floor called an error",
     'if row["ms_per_step"] < row["floor_ms"]:', 'if row["ms_per_step"] <= row["floor_ms"]:', "x_floor"),
    ("B13", "bench.py", "x floor swapped (floor / step)",
     'row["x_floor"] = row["ms_per_step"] / row["floor_ms"]', 'row["x_floor"] = row["floor_ms"] / row["ms_per_step"]',
     "x_floor or step_table"),
    ("B14", "bench.py", "ms a step: mean instead of median",
     'row["ms_per_step"] = 1000 * statistics.median(times)', 'row["ms_per_step"] = 1000 * statistics.mean(times)',
     "step_table"),
    ("B15", "bench.py", "floor: mean instead of median",
     'row["floor_ms"] = statistics.median(floors)', 'row["floor_ms"] = statistics.mean(floors)', "step_table"),
    ("B16", "bench.py", "ms a step: not divided by the steps",
     "times.append((time.perf_counter() - t0) / steps)", "times.append(time.perf_counter() - t0)", "step_table"),
    ("B17", "bench.py", "error vs float32 not relative",
     '((first.float() - ref).norm() / ref.norm()).item()', '(first.float() - ref).norm().item()', "step_table"),
    ("B18", "trainer.py", "peak memory on a CPU: KiB read as bytes",
     "ru_maxrss / 2**20", "ru_maxrss / 2**30", "peak_memory"),
    ("B18b", "trainer.py", "peak memory on CUDA in GB (10^9), not GiB",
     "torch.cuda.max_memory_allocated() / 2**30", "torch.cuda.max_memory_allocated() / 1e9", "peak_memory"),
    ("B19", "bench.py", "LoRA row counts every weight, not the trainable ones",
     "n = sum(p.numel() for p in lora.parameters() if p.requires_grad)", "n = sum(p.numel() for p in lora.parameters())",
     "training_cost"),
    ("B20", "bench.py", "report: the cl100k column shows the model's tokens",
     "{str(r['common_tokens']):>7}", "{str(r['tokens']):>7}", "end_to_end"),
    ("G1", "gradprobe.py", "gradient table: the link norm printed as text/link",
     "{r['text_over'][k]:12.2e}", "{r['links'][k]:12.2e}", "gradient_table"),
    ("G2", "gradprobe.py", "gradient table: the uniform entropy in bits, not nats",
     "{math.log(rows[0]['vocab']):.2f} nats", "{math.log2(rows[0]['vocab']):.2f} nats", "gradient_table"),
    ("T1", "trainer.py", "non-finite loss check removed",
     "        if not torch.isfinite(loss):", "        if False:", "non_finite"),
    ("T2", "trainer.py", "non-finite check catches NaN only",
     "        if not torch.isfinite(loss):", "        if torch.isnan(loss):", "non_finite"),
    ("T3", "trainer.py", "non-finite check after the update", None, move_nonfinite_check_after_the_update,
     "non_finite"),
    ("T4", "trainer.py", "message names the step off by one",
     "at step {step + 1}; stopping", "at step {step}; stopping", "non_finite"),
    ("T5", "trainer.py", "gradient clipping removed",
     "        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)\n", "", "clipping"),
    ("T6", "trainer.py", "clip at 10 instead of 1.0",
     "BETAS, GRAD_CLIP = (0.9, 0.95), 1.0", "BETAS, GRAD_CLIP = (0.9, 0.95), 10.0", "clipping"),
    ("T7", "trainer.py", "AdamW betas (0.9, 0.999)",
     "BETAS, GRAD_CLIP = (0.9, 0.95), 1.0", "BETAS, GRAD_CLIP = (0.9, 0.999), 1.0", "clipping"),
    ("T8", "trainer.py", "AdamW weight decay 0.01 instead of 0",
     "weight_decay=0.0)", "weight_decay=0.01)", "clipping"),
    ("T9", "trainer.py", "warm-up shifted by one step (step / warmup)",
     "return (step + 1) / warmup", "return step / warmup", "warmup or schedule"),
    ("T10", "trainer.py", "cosine shifted by one step",
     "(step - warmup) / max(1, total - warmup)", "(step - warmup + 1) / max(1, total - warmup)",
     "warmup or schedule"),
    ("T11", "trainer.py", "cosine not held at 0 past the end",
     "min(1.0, (step - warmup) / max(1, total - warmup))", "(step - warmup) / max(1, total - warmup)", "warmup"),
    ("T12", "trainer.py", "scheduler stepped before the optimizer (every step one late)",
     "        opt.step()\n        sched.step()\n", "        sched.step()\n        opt.step()\n", "schedule"),
    ("T13", "checkpoints.py", "resume: scheduler state not restored",
     '        sched.load_state_dict(state["scheduler"])\n', "", "resume"),
    ("T14", "checkpoints.py", "resume: optimizer state not restored",
     '        opt.load_state_dict(state["optimizer"])\n', "", "resume"),
    ("T15", "checkpoints.py", "resume: restarts one step early",
     '        return state["step"], state["losses"]', '        return state["step"] - 1, state["losses"]', "resume"),
    ("T16", "trainer.py", "random state not reseeded each step",
     "        torch.manual_seed(seed_of(args.seed, step))", "        pass", "resume"),
    ("T17", "trainer.py", "random state reseeded one step off",
     "torch.manual_seed(seed_of(args.seed, step))", "torch.manual_seed(seed_of(args.seed, step + 1))", "resume"),
    ("T18", "trainer.py", "batches: every rank takes the same rows",
     "return picked[rank::world]", "return picked[:batch_size]", "each_rank"),
    ("T19", "trainer.py", "torchrun: gradients summed, not averaged",
     "                p.grad /= world\n", "", "torchrun"),
    ("T20", "trainer.py", "summary: loss means over len // 2 steps",
     "k = max(1, min(5, len(losses) // 4))", "k = max(1, min(5, len(losses) // 2))", "summary_and_progress"),
    ("T21", "trainer.py", "trained share printed as a fraction, not a percentage",
     "({100 * n_train / n_frozen:.2f}% of", "({n_train / n_frozen:.2f}% of", "summary_and_progress"),
    ("T22", "trainer.py", "progress line shows the next step's lr (as before the fix)",
     "lr {lr:.2e}", "lr {sched.get_last_lr()[0]:.2e}", "summary_and_progress"),
    ("T23", "losses.py", "a cut target gets an end token too",
     "ids = [x[:max_tokens] if len(x) > max_tokens else x + [eos] for x in ids]",
     "ids = [x[:max_tokens] + [eos] if len(x) > max_tokens else x + [eos] for x in ids]", "cut_target"),
    ("T24", "losses.py", "a target of exactly the budget is cut (loses its end token)",
     "ids = [x[:max_tokens] if len(x) > max_tokens else x + [eos] for x in ids]",
     "ids = [x[:max_tokens] if len(x) >= max_tokens else x + [eos] for x in ids]", "cut_target"),
    ("T25", "trainer.py", "targets exactly at the budget reported as cut",
     "long = sum(len(ids) > max_tokens for", "long = sum(len(ids) >= max_tokens for", "cut_target"),
    ("T26", "losses.py", "the padding after a target is supervised",
     "[1] * min(len(x), L) + [0] * (L - len(x))", "[1] * L", "cut_target"),
    ("T27", "trainer.py", "CPU target budget 256 instead of 160",
     "args.max_target_tokens = 2048 if system.backbones[-1].device.type == \"cuda\" else 160",
     "args.max_target_tokens = 2048 if system.backbones[-1].device.type == \"cuda\" else 256", "target_budget"),
    ("T28", "trainer.py", "a checkpoint refused for non-finite weights no longer stops the run cleanly",
     "            except CheckpointError as e:", "            except OSError as e:", "non_finite_weights"),
]


def syntax_error(src, path):
    try:
        compile(src, path, "exec")
    except SyntaxError as e:
        return f"it does not compile ({e.msg}, line {e.lineno})"


def main(ids):
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill -TERM also puts the file back (finally below)
    chosen = [p for p in PLANTS if not ids or p[0] in ids]
    results = []
    for pid, name, what, old, new, tests in chosen:
        path = os.path.join(ROOT, name)
        with open(path) as f:
            src = f.read()
        bad = new(src) if callable(new) else src.replace(old, new) if src.count(old) == 1 else None
        why = "its text is not in the file once" if bad is None else syntax_error(bad, path)
        if why:  # (code that does not compile would fail every test, whatever they check)
            results.append((pid, what, f"NOT PLANTED: {why}; fix the plant"))
            print(f"{pid:4} {name:14} {what:70} {results[-1][2]}", flush=True)
            continue
        try:
            with open(path, "w") as f:
                f.write(bad)
            r = subprocess.run([sys.executable, "-m", "pytest", *TESTS, "-q", "-x", "-rf", "-p", "no:cacheprovider",
                                "-k", tests], cwd=ROOT, capture_output=True, text=True)
        finally:
            with open(path, "w") as f:
                f.write(src)
        failed = [l.split(" - ")[0].removeprefix("FAILED ") for l in r.stdout.splitlines() if l.startswith("FAILED")]
        verdict = f"caught by {', '.join(failed)}" if r.returncode == 1 and failed else \
            "MISSED" if r.returncode == 0 else f"pytest exit {r.returncode}: {r.stdout.strip().splitlines()[-1:]}"
        results.append((pid, what, verdict))
        print(f"{pid:4} {name:14} {what:70} {verdict}", flush=True)
    missed = [x for x in results if not x[2].startswith("caught")]
    print(f"\n{len(results) - len(missed)} of {len(results)} planted errors caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

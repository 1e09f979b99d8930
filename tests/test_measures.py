"""The measurement layer, checked against numbers worked out by hand: every figure evaluate.py's summary and comparison
table print (Wilson interval, mean and sd over seeds, pass@k, tokens / latent steps / seconds per question, what
differs between seeds), every figure bench.py's tables print (speed and token ratios against text, KV vs recompute,
seconds per step, peak memory, bandwidth, the floor and x floor, the error against float32), and every safeguard of
trainer.py (non-finite loss stops, gradient clipping, AdamW settings, warm-up + cosine schedule, resume of the
optimizer, schedule and random state, the torchrun gradient average). Each expected value is a literal, derived in
the comment next to it; an error planted in the formula behind it makes the test fail (the errors planted, and the
test that caught each, are listed in the commit messages that added these tests)."""
import argparse
import json
import math
import os
import re
import socket
import subprocess
import sys
import types

import pytest
import torch

import losses
import bench
import evaluate
import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--agents", "tiny-llama", "--benchmark", "gsm8k", "--max-new-tokens", "8", "--fast", "off"]


# ==== evaluate.py ===================================================================================================

# Wilson score interval, z = 1.96: centre (p + z²/2n) / (1 + z²/n), half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
#   3/5:  p = 0.6, z²/n = 0.76832, den = 1.76832; centre = 0.98416 / 1.76832 = 0.55655;
#         half = 1.96·sqrt(0.048 + 0.038416) / 1.76832 = 1.96·0.293966 / 1.76832 = 0.32584  ->  [0.2307, 0.8824]
#   1/10: p = 0.1, den = 1.38416; centre = 0.29208 / 1.38416 = 0.21102;
#         half = 1.96·sqrt(0.009 + 0.009604) / 1.38416 = 0.19314                           ->  [0.0179, 0.4042]
#   0/5:  centre = half = 0.38416 / 1.76832 = 0.21724                                       ->  [0,      0.4345]
#   5/5:  centre = 1.38416 / 1.76832 = 0.78276, half = 0.21724                              ->  [0.5655, 1]
#   7/12: p = 0.58333, den = 1.32013; centre = 0.74340 / 1.32013 = 0.56312;
#         half = 1.96·sqrt(0.020255 + 0.006669) / 1.32013 = 0.24362                         ->  [0.3195, 0.8067]
WILSON = [(3, 5, 0.2307, 0.8824), (1, 10, 0.0179, 0.4042), (0, 5, 0.0, 0.4345), (5, 5, 0.5655, 1.0),
          (7, 12, 0.3195, 0.8067)]


@pytest.mark.parametrize("k,n,lo,hi", WILSON, ids=[f"{k}/{n}" for k, n, _, _ in WILSON])
def test_wilson_interval_equals_the_interval_by_hand(k, n, lo, hi):
    got = evaluate.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert 0.0 <= got[0] and got[1] <= 1.0  # clipped to [0, 1] exactly (0/5 is -3e-17, 5/5 is 1 + 2e-16 unclipped)


def test_wilson_of_no_rows_is_zero_zero():
    assert evaluate.wilson(0, 0) == (0.0, 0.0)


def _rows(per_seed, tokens=None, seconds=None):
    """Rows of a run: per_seed = {seed: [correct, ...]}, question i of every seed has id i."""
    return [dict(id=i, seed=s, correct=c, tokens=tokens(s, i) if tokens else {"a": 1}, latent_steps=6,
                 seconds=seconds(s, i) if seconds else 1.0, f1=float(c))
            for s, cs in per_seed.items() for i, c in enumerate(cs)]


ST = dict(benchmark="gsm8k", method="latent", agents=["a", "b"], seeds=[0, 1, 2], samples=1)


def test_summary_figures_equal_the_figures_by_hand():
    # seeds 0, 1, 2 over the same 4 questions: 2/4, 4/4, 1/4 right
    rows = _rows({0: [1, 1, 0, 0], 1: [1, 1, 1, 1], 2: [1, 0, 0, 0]},
                 tokens=lambda s, i: {"planner": i, "solver": 2},  # question i: i + 2 tokens
                 seconds=lambda s, i: 0.5 * (s + 1))               # seed s: 0.5 (s + 1) s a question
    s = evaluate.summarize(rows, ST, {})
    assert s["per_seed"] == [0.5, 1.0, 0.25]
    # mean over seeds: (0.5 + 1 + 0.25) / 3 = 0.58333
    assert s["accuracy"] == pytest.approx(0.583333, abs=1e-6)
    # sd with ddof = 1 (statistics.stdev): deviations -0.08333, 0.41667, -0.33333; squares sum 0.291667;
    # / (3 - 1) = 0.145833; sqrt = 0.381881   (ddof = 0 would give sqrt(0.291667 / 3) = 0.311805)
    assert s["std"] == pytest.approx(0.381881, abs=1e-6)
    # Wilson over ALL rows: 7 right of 12 -> [0.3195, 0.8067] (see WILSON); over the 4 questions it would differ
    assert s["ci95"] == pytest.approx([0.3195, 0.8067], abs=1e-4)
    assert (s["n"], s["rows"], s["correct"]) == (4, 12, 7)
    # tokens: each seed 2 + 3 + 4 + 5 = 14, three seeds 42, over 12 rows = 3.5 a question
    assert s["mean_tokens"] == pytest.approx(3.5)
    assert s["mean_latent_steps"] == pytest.approx(6.0)
    # seconds: 4 rows of 0.5, 1.0, 1.5 = 2 + 4 + 6 = 12 over 12 rows = 1.0 a question
    assert s["mean_seconds"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(7 / 12)  # 0.58333: f1 is 1 on the 7 right rows, 0 elsewhere
    assert s["metric"] == "accuracy"


def test_accuracy_weighs_every_seed_alike():
    # seed 0: 2 rows, 2 right (1.0); seed 1: 4 rows, 1 right (0.25): mean over seeds (1 + 0.25) / 2 = 0.625,
    # not 3 / 6 = 0.5 pooled; sd = |1 - 0.25| / sqrt(2) = 0.530330
    s = evaluate.summarize(_rows({0: [1, 1], 1: [0, 0, 0, 1]}), dict(ST, seeds=[0, 1]), {})
    assert s["accuracy"] == pytest.approx(0.625) and s["std"] == pytest.approx(0.530330, abs=1e-6)
    one = evaluate.summarize(_rows({0: [1, 0, 1]}), dict(ST, seeds=[0]), {})
    assert one["std"] == 0.0 and one["accuracy"] == pytest.approx(2 / 3)  # one seed: no spread to report


def test_the_comparison_table_prints_the_figures_by_hand(capsys):
    rows = _rows({0: [1, 1, 0, 0], 1: [1, 1, 1, 1], 2: [1, 0, 0, 0]},
                 tokens=lambda s, i: {"planner": i, "solver": 2}, seconds=lambda s, i: 0.5 * (s + 1))
    s = evaluate.summarize(rows, ST, {})
    evaluate.print_table([s])
    head, line = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert head.split() == ["benchmark", "method", "agents", "n", "acc", "±", "sd", "95%", "CI", "tokens", "latent",
                            "s/q"]
    # benchmark, method, agents, n = 4, acc 0.583, sd 0.382, CI [0.32, 0.81], 3.5 tokens, 6 latent steps, 1.00 s
    assert line.split() == ["gsm8k", "latent", "a,b", "4", "0.583", "0.382", "[0.32,", "0.81]", "3.5", "6", "1.00"]


# pass@k. The unbiased estimator (Chen et al. 2021) from n samples of which c are right:
#   pass@k = 1 - C(n - c, k) / C(n, k).
# evaluate.py draws exactly n = k samples per question, so C(n - c, k) = C(k - c, k) is 1 when c = 0 and 0 when
# c >= 1 (fewer than k items to choose k from): pass@3 from 3 samples is 0 for c = 0 and 1 for c = 1, 2, 3.
# A general n > k would need the estimator itself; evaluate.py never draws more than k.
PASS_AT_3 = {(False, False, False): 0.0, (True, False, False): 1.0, (False, True, False): 1.0,
             (False, False, True): 1.0, (True, True, False): 1.0, (False, True, True): 1.0, (True, True, True): 1.0}


def _samples(verdicts):
    it = dict(id=0, question="q", gold="18", kind="math")
    recs = [dict(text=f"s{j}", tokens={"solver": 4 + 2 * j}, written=[f"w{j}"], latent_steps=0, seconds=1.0 + j,
                 continued=False) for j in range(len(verdicts))]
    scored = [(f"p{j}", ok, {"rule": "exact match"}) for j, ok in enumerate(verdicts)]
    return evaluate.make_row(it, recs, scored, "single")


@pytest.mark.parametrize("verdicts", list(PASS_AT_3), ids=["".join("x" if v else "-" for v in k) for k in PASS_AT_3])
def test_pass_at_k_is_the_unbiased_estimator_with_n_equal_to_k(verdicts):
    row = _samples(verdicts)
    n = k = len(verdicts)
    c = sum(verdicts)
    assert 1 - math.comb(n - c, k) / math.comb(n, k) == PASS_AT_3[verdicts]  # the estimator, as derived above
    assert float(row["correct"]) == PASS_AT_3[verdicts]
    assert [x["correct"] for x in row["samples"]] == list(verdicts) and row["prediction"] == "p0"
    # per question: tokens are the mean over the 3 samples, (4 + 6 + 8) / 3 = 6; seconds their sum 1 + 2 + 3 = 6
    assert row["tokens"] == {"solver": pytest.approx(6.0)} and row["seconds"] == pytest.approx(6.0)


def test_pass_at_k_summary_is_the_mean_of_the_per_question_estimates(capsys):
    # four questions with c = 0, 1, 2, 3 right of 3 samples: pass@3 = 0, 1, 1, 1 -> 0.75
    rows = [dict(_samples([j < c for j in range(3)]), id=c, seed=0) for c in range(4)]
    s = evaluate.summarize(rows, dict(ST, seeds=[0], samples=3), {})
    assert s["accuracy"] == pytest.approx(0.75) and s["metric"] == "pass@3"
    evaluate.print_table([s])
    assert "(acc is pass@3)" in capsys.readouterr().out


def test_what_differs_between_seeds(tmp_path, monkeypatch, capsys):
    """Seeds --seed, --seed + 1, ...; each batch is seeded from (seed, first question) as seed * 1_000_003 + position,
    so two seeds draw differently and a rerun draws the same. By hand for --seed 5 --seeds 2, 3 questions in batches
    of 2: seed 5 -> 5_000_015 (questions 0, 1), 5_000_017 (question 2); seed 6 -> 6_000_018, 6_000_020."""
    seen = []

    class Stub:  # answers "\boxed{18}" (question 0's gold) when its batch's torch seed is odd, else "\boxed{1}"
        backbones = [None]

        def run(self, questions, mode, rounds, steps, max_new_tokens, temperature, top_p, final_answer):
            seed = torch.initial_seed()
            seen.append(seed)
            draw = torch.rand(()).item()
            return [dict(text=f"\\boxed{{{18 if seed % 2 else 1}}}", tokens={"solver": 1}, latent_steps=0,
                         seconds=1.0, written=[f"{draw:.6f}"], continued=False) for _ in questions]

    monkeypatch.setattr(evaluate, "build_system", lambda a, method: Stub())
    argv = TINY + ["--limit", "3", "--batch-size", "2", "--seed", "5", "--seeds", "2"]
    assert evaluate.main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert seen == [5_000_015, 5_000_017, 6_000_018, 6_000_020]
    (f,) = (tmp_path / "a").glob("*.jsonl")
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    assert [(r["seed"], r["id"]) for r in rows] == [(5, 0), (5, 1), (5, 2), (6, 0), (6, 1), (6, 2)]
    assert rows[0]["texts"] != rows[3]["texts"]  # same question, other seed: another draw
    summary = json.loads(f.with_name(f.name.replace(".jsonl", ".summary.json")).read_text())
    assert summary["settings"]["seeds"] == [5, 6]
    # seed 5: question 0 right (odd seed), 1 and 2 wrong -> 1/3; seed 6: none right -> 0; mean 1/6;
    # sd = sqrt(((1/3 - 1/6)² + (0 - 1/6)²) / 1) = sqrt(2 / 36) = 0.235702
    assert summary["per_seed"] == pytest.approx([1 / 3, 0.0]) and summary["accuracy"] == pytest.approx(1 / 6)
    assert summary["std"] == pytest.approx(0.235702, abs=1e-6)
    # a batch's 1.0 s is shared by its questions: 0.5, 0.5 (batch of 2), 1.0 (batch of 1); 4 / 6 rows = 0.6667 s
    assert [r["seconds"] for r in rows] == [0.5, 0.5, 1.0, 0.5, 0.5, 1.0]
    assert summary["mean_seconds"] == pytest.approx(2 / 3)
    seen.clear()
    assert evaluate.main(argv + ["--out", str(tmp_path / "b")]) == 0  # a rerun draws the same
    assert [json.loads(l)["texts"] for l in next((tmp_path / "b").glob("*.jsonl")).read_text().splitlines()] == \
        [r["texts"] for r in rows]
    capsys.readouterr()


# ==== bench.py ======================================================================================================

class Clock:
    """A fake time.perf_counter that advances only when told: measured seconds are the ones a test sets."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s


@pytest.fixture()
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=c, time=c))
    return c


# (mode, r) -> (seconds for the call, tokens per question); two questions
E2E = {("single", 1): (3.0, 40), ("text", 1): (10.0, 100), ("latent", 1): (4.0, 25), ("text", 2): (30.0, 150),
       ("latent", 2): (6.0, 60)}


def test_end_to_end_ratios_against_text_at_the_same_r(clock, monkeypatch, capsys):
    class Stub:
        backbones = [types.SimpleNamespace(device="cpu")]

        def run(self, questions, mode, r, steps, max_new_tokens):
            secs, tokens = E2E[(mode, r)]
            clock.advance(secs)
            return [dict(tokens={"planner": tokens - 10, "solver": 10}, written=["one two", "three"],
                         latent_steps=4 if mode == "latent" else 0) for _ in questions]

    monkeypatch.setattr(bench, "common_tokens", lambda texts: sum(len(t.split()) for t in texts))
    monkeypatch.setattr(bench, "peak_memory_gb", lambda device: 1.5)
    rows = bench.end_to_end(Stub(), ["q1", "q2"], [1, 2], 3, 8)
    by = {(r["mode"], r["rounds"]): r for r in rows}
    assert [by[k]["seconds"] for k in E2E] == [3.0, 10.0, 4.0, 30.0, 6.0]
    assert [by[k]["tokens"] for k in E2E] == [80, 200, 50, 300, 120]  # two questions each
    assert by[("latent", 2)]["common_tokens"] == 6 and by[("latent", 2)]["latent_steps"] == 8  # 2 x (2 + 1); 2 x 4
    # r = 1: speedup = text s / latent s = 10 / 4 = 2.5; token reduction = 1 - 50 / 200 = 0.75
    assert by[("latent", 1)]["speedup_vs_text"] == pytest.approx(2.5)
    assert by[("latent", 1)]["token_reduction_vs_text"] == pytest.approx(0.75)
    # r = 2 against text at r = 2 (not r = 1): 30 / 6 = 5.0; 1 - 120 / 300 = 0.6
    assert by[("latent", 2)]["speedup_vs_text"] == pytest.approx(5.0)
    assert by[("latent", 2)]["token_reduction_vs_text"] == pytest.approx(0.6)
    assert not any("speedup_vs_text" in by[k] for k in E2E if k[0] != "latent")
    capsys.readouterr()
    bench.report(dict(machine="cpu", agents="x", dtype="float32", seconds=0, end_to_end=rows))
    table = {tuple(l.split()[:2]): l.split() for l in capsys.readouterr().out.splitlines()
             if l.split()[:1] in (["single"], ["text"], ["latent"])}
    # method, r, seconds, tokens, cl100k, latent steps, peak GB, speedup, tokens vs text (negative: fewer)
    assert table[("latent", "1")] == ["latent", "1", "4.0", "50", "6", "8", "1.50", "2.50x", "-75.0%"]
    assert table[("latent", "2")] == ["latent", "2", "6.0", "120", "6", "8", "1.50", "5.00x", "-60.0%"]
    assert table[("text", "2")] == ["text", "2", "30.0", "300", "6", "0", "1.50"]


def test_kv_versus_recompute_is_best_of_n_and_a_ratio_of_the_two(clock, monkeypatch, capsys):
    """A KV rollout of m steps at batch B takes 0.001·B·m + 0.002 s, a recompute 0.0006·B·m² s; the first timed call
    of each pair is 0.004 s slower (best of 2 drops it). m = 2 is the warm-up call, not timed."""
    calls = {}

    def fake(kind, seconds):
        def f(bb, inner, B, mask, m):
            if m != 2:
                calls[(kind, B, m)] = calls.get((kind, B, m), 0) + 1
                clock.advance(seconds(B, m) + (0.004 if calls[(kind, B, m)] == 1 else 0.0))
        return f
    monkeypatch.setattr(bench, "rollout", fake("kv", lambda B, m: 0.001 * B * m + 0.002))
    monkeypatch.setattr(bench, "rollout_recompute", fake("rc", lambda B, m: 0.0006 * B * m * m))
    monkeypatch.setattr(bench, "build_inputs", lambda bb, prompts, inbox: (len(prompts), None))  # "embeds" = B
    system = types.SimpleNamespace(backbones=[types.SimpleNamespace(device="cpu")], inner={"a": None}, roles=["a"],
                                   prompt=lambda i, q, r: q)
    rows = bench.rollouts(system, [4, 8], [1, 4], max_work=16)
    assert [(r["batch"], r["m"]) for r in rows] == [(1, 4), (1, 8), (4, 4)]  # batch 4 x m 8 = 32 > 16: skipped
    assert calls[("kv", 1, 4)] == calls[("rc", 4, 4)] == 2  # best of 2 where batch x m <= 32
    # B=1, m=4: KV 0.006 s, recompute 0.0096 s -> 1.6x, 1000 · 0.006 / 4 = 1.5 ms a step
    # B=1, m=8: KV 0.010 s, recompute 0.0384 s -> 3.84x, 1.25 ms a step
    # B=4, m=4: KV 0.018 s, recompute 0.0384 s -> 2.1333x, 4.5 ms a step
    want = [(0.006, 0.0096, 1.6, 1.5), (0.010, 0.0384, 3.84, 1.25), (0.018, 0.0384, 2.133333, 4.5)]
    for r, (kv, rc, speedup, ms) in zip(rows, want):
        assert (r["kv_seconds"], r["recompute_seconds"], r["speedup"], r["kv_ms_per_step"]) == \
            pytest.approx((kv, rc, speedup, ms), abs=1e-6)
    capsys.readouterr()
    bench.report(dict(machine="cpu", agents="x", dtype="float32", seconds=0, rollout=rows))
    lines = [l.split() for l in capsys.readouterr().out.splitlines() if l.split()[:2] in (["1", "4"], ["4", "4"])]
    assert [l[-2:] for l in lines] == [["1.6x", "1.5"], ["2.1x", "4.5"]]


def test_time_it_is_the_mean_of_the_repeats_after_an_untimed_warm_up(clock):
    # warm-up 7 s (not timed), then 4 repeats of 0.5 s: 2.0 s / 4 = 0.5 s a call
    assert bench.time_it(lambda: clock.advance(0.5), "cpu", repeats=4, warmup=lambda: clock.advance(7.0)) == 0.5
    # no warm-up given: the call itself warms up once, untimed: 3 timed calls of 0.25 s -> 0.25
    assert bench.time_it(lambda: clock.advance(0.25), "cpu", repeats=3) == 0.25


def test_bandwidth_counts_bytes_read_and_written(monkeypatch):
    # a copy of 64 MiB (CPU) in 0.01 s moves 2 · 64 · 2^20 bytes: 134217728 / 0.01 = 1.34217728e10 bytes/s
    monkeypatch.setattr(bench, "time_it", lambda fn, device, repeats=1, warmup=None: 0.01)
    assert bench.bandwidth("cpu") == pytest.approx(1.34217728e10)


def test_step_bytes_are_the_decoder_weights_by_hand():
    """tiny-llama: d 64, 2 layers, 4 heads of 16, 2 KV heads (k, v: 64 -> 32), MLP 128, float32. A layer: q 64·64 +
    k 64·32 + v 64·32 + o 64·64 = 12,288; gate, up, down 3 · 64·128 = 24,576; two RMSNorms 128: 36,992 weights.
    Two layers 73,984 + the final norm 64 = 74,048 weights · 4 bytes = 296,192 bytes (no embeddings, no LM head)."""
    from loading import load_backbone
    assert bench.step_bytes(load_backbone("tiny-llama")) == 296_192


@pytest.mark.parametrize("ms,floor,x", [(3.0, 1.5, 2.0), (2.0, 2.0, 1.0), (1.0, 1.5, None)])
def test_x_floor_is_step_over_floor_and_below_the_floor_is_an_error(ms, floor, x):
    row = dict(ms_per_step=ms, floor_ms=floor)
    bench.judge_floor(row)
    if x is None:  # 1.0 ms under a 1.5 ms floor: impossible, reported
        assert "x_floor" not in row and "1.000 < 1.500" in row["measurement_error"]
    else:  # 3.0 / 1.5 = 2.0; on the floor exactly: 1.0, not an error
        assert row["x_floor"] == x and "measurement_error" not in row


def test_step_table_takes_medians_of_steps_and_floors(clock, monkeypatch):
    """Three repeats of 2 steps taking 0.004, 0.010, 0.006 s: 0.002, 0.005, 0.003 s a step, median 3.000 ms (mean
    would be 3.333). Bandwidth samples 1e9, 4e9, 2e9 bytes/s with 296,192 bytes a step: floors 0.296192, 0.074048,
    0.148096 ms, median 0.148096 ms; x floor = 3.0 / 0.148096 = 20.2571. The mode's first step is made 1% off the
    float32 reference: error 1.0e-02."""
    from recursion import System
    system = System(["tiny-llama"])
    bws, runs, real = iter([1e9, 4e9, 2e9]), iter([0.004, 0.010, 0.006]), bench._stepper

    def stepper(*a):
        prefill, _, first = real(*a)
        return prefill, lambda state: clock.advance(next(runs)), first * 1.01
    monkeypatch.setattr(bench, "_stepper", stepper)
    monkeypatch.setattr(bench, "bandwidth", lambda device: next(bws))
    (row,) = bench.step_times(system, [1], ["off"], prompt_len=8, steps=2, repeats=3)
    assert row["ms_per_step"] == pytest.approx(3.0)
    assert row["floor_ms"] == pytest.approx(0.148096)
    assert row["x_floor"] == pytest.approx(20.2571, abs=1e-4)
    assert row["rel_error_vs_fp32"] == pytest.approx(0.01, abs=1e-5)
    # model, batch, mode, ms/step, floor ms, x floor, error vs fp32, set-up s
    assert bench._step_row(row).split() == ["tiny-llama", "1", "off", "3.000", "0.148", "20.3", "1.0e-02", "0.0"]


def test_gradient_table_prints_each_figure_in_its_column(capsys):
    """Part 5's table (its figures are computed by hand in test_bench.py): one row, r = 2, T = 0.5, norms through the
    zero / kaiming links 1e-3 / 2e-3, text 4e-3 -> text/zero 4.0, text/kaiming 2.0; gains 0.5, 0.25, text 0.125;
    scales 3, 6, text 1.5; entropy 5.5 nats, max p 0.25; vocabulary 259: uniform entropy ln 259 = 5.5568 -> 5.56."""
    from gradprobe import grad_table
    row = dict(rounds=2, temperature=0.5, links={"zero": 1e-3, "kaiming": 2e-3}, text_norm=4e-3,
               text_over={"zero": 4.0, "kaiming": 2.0}, link_gain={"zero": 0.5, "kaiming": 0.25}, text_gain=0.125,
               link_scale={"zero": 3.0, "kaiming": 6.0}, text_scale=1.5, text_entropy=5.5, text_max_prob=0.25,
               vocab=259)
    grad_table([row], "a,b")
    lines = capsys.readouterr().out.splitlines()
    (line,) = [l.split() for l in lines if l.split()[:2] == ["2", "0.5"]]
    assert line == ["2", "0.5", "1.00e-03", "2.00e-03", "4.00e-03", "4.00e+00", "2.00e+00", "5.00e-01", "2.50e-01",
                    "1.25e-01", "3.00e+00", "6.00e+00", "1.50e+00", "5.50", "0.25"]
    assert "259-token vocabulary has entropy 5.56 nats" in lines[-1]


def test_peak_memory_is_in_gib(monkeypatch):
    # CPU: Linux reports ru_maxrss in KiB: 3 · 2^19 KiB = 1.5 GiB; CUDA: bytes, 3 · 2^29 B = 1.5 GiB
    monkeypatch.setattr(trainer.resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=3 * 2**19))
    assert trainer.peak_memory_gb("cpu") == 1.5
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**29)
    assert trainer.peak_memory_gb("cuda:0") == 1.5


def test_training_cost_rows_count_the_trainable_weights_by_hand(monkeypatch, capsys):
    """tiny-llama alone (vocab 259 = 256 bytes + 3 specials). Outer link (its feedback to itself, 2layer_ln_res):
    W1 64 -> 128 (8,192 + 128), W2 128 -> 64 (8,192 + 64), W3 64·64 = 4,096, two LayerNorms 2 · 128: 20,928.
    LoRA r = 8 on every linear layer (A r·in + B out·r): q and o 64 -> 64: 1,024 each; k and v 64 -> 32: 768 each;
    gate and up 64 -> 128, down 128 -> 64: 1,536 each; 8,192 a layer, 2 layers: 16,384.
    Full: embeddings 259·64 = 16,576 + decoder 74,048 (test_step_bytes...) + LM head 16,576 = 107,200."""
    from recursion import System
    monkeypatch.setattr(bench, "time_it", lambda fn, device, repeats=1, warmup=None: 0.25)
    monkeypatch.setattr(bench, "peak_memory_gb", lambda device: 0.5)
    pytest.importorskip("peft")
    rows = bench.training_cost(System(["tiny-llama"]))
    assert [(r["method"], r["trainable"], r["seconds_per_step"]) for r in rows] == [
        ("outer links", 20_928, 0.25), ("LoRA r=8 (all)", 16_384, 0.25), ("full fine-tuning", 107_200, 0.25)]
    capsys.readouterr()
    bench.report(dict(machine="cpu", agents="x", dtype="float32", seconds=0, training=rows))
    table = [l.split() for l in capsys.readouterr().out.splitlines()]
    # method, trainable, s/step, peak GB
    assert ["outer", "links", "20,928", "0.25", "0.50"] in table
    assert ["LoRA", "r=8", "(all)", "16,384", "0.25", "0.50"] in table
    assert ["full", "fine-tuning", "107,200", "0.25", "0.50"] in table


# ==== trainer.py ====================================================================================================

class Weights:
    """What train() saves and restores: a list of parameters, as OUT/links.safetensors + .json."""
    name, label = "links", "link"

    def __init__(self, params):
        self.params = params

    def save(self, path, extra):  # the writer the real runs use: checksummed, so --resume accepts it
        from checkpoints import save_tensors
        save_tensors(path, {f"p{i}": p for i, p in enumerate(self.params)}, extra)

    def load(self, path):
        from safetensors.torch import load_file
        t = load_file(path + ".safetensors")
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(t[f"p{i}"])


SYSTEM = types.SimpleNamespace(backbones=[types.SimpleNamespace(num_params=lambda: 1000, device=torch.device("cpu"))])
ROWS = [{"question": f"q{i}"} for i in range(5)]


def _args(out, **kw):
    base = dict(lr=0.1, warmup=1, steps=1, resume=False, overwrite=False, out=str(out), batch_size=1, seed=0,
                log_every=100, ckpt_every=100, stage="outer")
    return argparse.Namespace(**dict(base, **kw))


def _train(params, loss_fn, args):
    return trainer.train(SYSTEM, params, loss_fn, ROWS, args, Weights(params))


def _state(out, step):
    return torch.load(os.path.join(out, f"step-{step:06d}", "state.pt"), weights_only=True)


@pytest.mark.parametrize("c,g", [(3.0, 0.5), (0.1, 0.1)])
def test_gradient_clipping_at_1_bounds_the_gradient_adam_sees(tmp_path, c, g):
    """loss = c · sum(w), w = four ones: the gradient is c in each element, norm 2c.
    c = 3: norm 6 > 1, clipped to norm 1.0: 0.5 each. c = 0.1: norm 0.2 <= 1, left as it is: 0.1 each.
    AdamW(0.9, 0.95) after one step: exp_avg = 0.1 g, exp_avg_sq = 0.05 g²; with bias correction the step is
    lr · g / |g| = lr = 0.1 (warm-up 1: the first step's lr factor is (0 + 1) / 1), and weight decay 0 leaves nothing
    else: w = 1 - 0.1 = 0.9 (decay 0.01 would give 0.999 - 0.1 = 0.899)."""
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    _train([w], lambda batch: c * w.sum(), _args(tmp_path))
    assert w.grad.norm().item() == pytest.approx(2 * g, rel=1e-5)  # the clipped gradient: norm 1.0 or 0.2
    assert w.grad.tolist() == pytest.approx([g] * 4, rel=1e-5)
    adam = _state(tmp_path, 1)["optimizer"]["state"][0]
    assert adam["exp_avg"].tolist() == pytest.approx([0.1 * g] * 4, rel=1e-5)
    assert adam["exp_avg_sq"].tolist() == pytest.approx([0.05 * g * g] * 4, rel=1e-5)
    assert w.tolist() == pytest.approx([0.9] * 4, abs=1e-6)


def test_warmup_cosine_factors_equal_the_formula_by_hand():
    """warm-up 4, 12 steps: steps 0..3 get (s + 1) / 4; then 0.5 (1 + cos(pi (s - 4) / 8)), held at 0 past the end:
    s = 4: 1; s = 6: 0.5 (1 + cos(pi/4)) = 0.853553; s = 8: 0.5 (1 + cos(pi/2)) = 0.5; s = 10: 0.5 (1 + cos(3pi/4))
    = 0.146447; s = 12: 0.5 (1 + cos(pi)) = 0; s = 15: still 0 (cos(pi · 11/8) would give 0.308658)."""
    f = trainer.lr_lambda(4, 12)
    got = [f(s) for s in (0, 1, 2, 3, 4, 6, 8, 10, 12, 15)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0], abs=1e-6)
    assert trainer.lr_lambda(0, 4)(0) == 1.0  # no warm-up: the cosine from the first step


class SpyAdamW(torch.optim.AdamW):
    made = []

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        SpyAdamW.made.append(self)


@pytest.fixture()
def spy(monkeypatch):
    SpyAdamW.made = []
    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    return SpyAdamW.made


def test_the_learning_rate_each_step_uses_is_the_schedule_by_hand(tmp_path, spy):
    """lr 0.1, warm-up 2, 6 steps: factors (0+1)/2, (1+1)/2, then 0.5 (1 + cos(pi (s - 2) / 4)) for s = 2..5:
    lrs 0.05, 0.1, 0.1, 0.0853553, 0.05, 0.0146447 (a schedule one step late would start 0.1, ... or 0, ...).
    Read two ways: the optimizer's lr when the step's loss is computed, and the move of w: a constant gradient 0.5
    (unclipped) gives Adam's step lr · m̂ / sqrt(v̂) = lr exactly, so w falls by the lr at every step."""
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    seen = []

    def loss_fn(batch):
        seen.append((spy[-1].param_groups[0]["lr"], w.item()))
        return 0.5 * w.sum()
    _train([w], loss_fn, _args(tmp_path, warmup=2, steps=6))
    want = [0.05, 0.1, 0.1, 0.0853553, 0.05, 0.0146447]
    assert [lr for lr, _ in seen] == pytest.approx(want, abs=1e-7)
    ws = [x for _, x in seen] + [w.item()]
    assert [a - b for a, b in zip(ws, ws[1:])] == pytest.approx(want, abs=1e-7)


def test_training_summary_and_progress_lines_print_the_figures_by_hand(tmp_path, capsys):
    """8 steps with losses 8, 7, ..., 1: k = max(1, min(5, 8 // 4)) = 2, first two 7.5000, last two 1.5000. 4 trained
    weights of 1,000 frozen: 0.40% / 0.400%. A progress line shows the lr its step trained with (lr 0.1, warm-up 2,
    8 steps): step 1 (index 0) 0.1 · 1/2 = 5.00e-02; step 4 (index 3) 0.1 · 0.5 (1 + cos(pi · 1/6)) = 0.1 · 0.933013
    = 9.33e-02; step 8 (index 7) 0.1 · 0.5 (1 + cos(pi · 5/6)) = 0.1 · 0.066987 = 6.70e-03 (the next step's lr
    would read 1.00e-01, 7.50e-02 and 0.00e+00)."""
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    losses = iter([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    got = _train([w], lambda batch: 0 * w.sum() + next(losses), _args(tmp_path, warmup=2, steps=8, log_every=4))
    assert got == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    out = capsys.readouterr().out
    assert "training 4 link parameters (0.40% of 1,000 frozen)" in out
    assert re.search(r"loss \(first -> last, mean of 2\) +7\.5000 -> 1\.5000\n", out)
    assert re.search(r"trainable parameters +4 \(0\.400% of frozen\)\n", out)
    assert "step     1/8  loss 8.0000  lr 5.00e-02" in out
    assert "step     4/8  loss 5.0000  lr 9.33e-02" in out
    assert "step     8/8  loss 1.0000  lr 6.70e-03" in out


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_stops_before_it_touches_the_weights(tmp_path, capsys, bad):
    """Steps 1 and 2 train (checkpoints step-1, step-2); step 3's loss is non-finite: exit 3 with a message naming
    the value and the step, no backward or update with it (the weights stay as step 2 left them)."""
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    snap = []

    def loss_fn(batch):
        snap.append(w.detach().clone())
        return 0.5 * w.sum() if len(snap) < 3 else 0 * w.sum() + bad
    with pytest.raises(SystemExit) as e:
        _train([w], loss_fn, _args(tmp_path, steps=5, ckpt_every=1))
    assert e.value.code == 3 and len(snap) == 3
    out = capsys.readouterr().out
    assert f"error: loss is {bad} at step 3; stopping" in out and "--resume" in out
    assert torch.equal(w.detach(), snap[2]) and torch.isfinite(w).all()
    assert (tmp_path / "latest").read_text() == "step-000002"


def test_non_finite_weights_stop_the_run_and_the_last_good_checkpoint_stays(tmp_path, capsys):
    """Step 3's loss is finite but leaves w = NaN: the checkpoint writer (checkpoints.save_tensors) refuses it, and the run
    stops with exit 3 naming step 3; OUT/latest still names step 2, whose weights are the finite ones."""
    from checkpoints import load_tensors, save_tensors

    class Checked(Weights):
        def save(self, path, extra):
            save_tensors(path, {f"p{i}": p for i, p in enumerate(self.params)}, extra)

    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    calls = []

    def loss_fn(batch):
        calls.append(1)
        if len(calls) == 3:  # a finite loss that reaches no weight, after the weights went NaN
            with torch.no_grad():
                w.fill_(float("nan"))
            return torch.tensor(1.0, requires_grad=True)
        return 0.5 * w.sum()
    with pytest.raises(SystemExit) as e:
        trainer.train(SYSTEM, [w], loss_fn, ROWS, _args(tmp_path, steps=5, ckpt_every=1), Checked([w]))
    assert e.value.code == 3 and len(calls) == 3
    out = capsys.readouterr().out
    assert "not finite (step 3); stopping" in out and "last good checkpoint" in out
    assert (tmp_path / "latest").read_text() == "step-000002"
    tensors, _ = load_tensors(str(tmp_path / "links"))
    assert torch.isfinite(tensors["p0"]).all()


def test_resume_restores_the_schedule_the_optimizer_the_batches_and_the_random_state(tmp_path, spy):
    """6 steps, lr 0.1, warm-up 2, seed 7, a checkpoint every 3 steps. The gradient changes each step (0.2 + 0.3 u,
    u a torch draw), so Adam's moments matter. Killed during step 4, resumed: steps 4-6 (indices 3..5) must see
    lr 0.1 · 0.853553, 0.05, 0.0146447 (not the warm-up's 0.05 of a fresh schedule), the draw of
    torch.manual_seed(7 · 1_000_003 + step), the batch random.Random(7 · 1_000_003 + step) picks, and end with the
    weights of the uninterrupted run."""
    def run(out, kill_at=None, resume=False):
        w = torch.nn.Parameter(torch.full((1,), 5.0 if resume else 0.0, dtype=torch.float64))  # resume loads w
        seen = []

        def loss_fn(batch):
            if kill_at is not None and len(seen) == kill_at:
                raise KeyboardInterrupt
            u = torch.rand(()).item()
            seen.append((spy[-1].param_groups[0]["lr"], u, batch[0]["question"], w.item()))
            return (0.2 + 0.3 * u) * w.sum()
        torch.manual_seed(123)  # the same global state at both starts: only the reseeding makes the draws agree
        losses = _train([w], loss_fn, _args(out, warmup=2, steps=6, seed=7, ckpt_every=3, resume=resume))
        return seen, w.item(), losses

    whole, w_whole, losses_whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", kill_at=3)
    assert (tmp_path / "cut" / "latest").read_text() == "step-000003"
    resumed, w_resumed, losses_resumed = run(tmp_path / "cut", resume=True)
    assert len(resumed) == 3
    assert [lr for lr, *_ in resumed] == pytest.approx([0.0853553, 0.05, 0.0146447], abs=1e-7)
    draws = [torch.rand((), generator=torch.Generator().manual_seed(7 * 1_000_003 + s)).item() for s in (3, 4, 5)]
    assert [u for _, u, *_ in resumed] == draws
    import random
    picks = [ROWS[random.Random(7 * 1_000_003 + s).randrange(len(ROWS))]["question"] for s in (3, 4, 5)]
    assert [q for _, _, q, _ in resumed] == picks
    assert resumed == whole[3:]  # same lrs, draws, batches and weights at every step
    assert w_resumed == w_whole and losses_resumed == losses_whole


def test_each_rank_takes_its_own_slice_of_one_global_batch():
    # world 2, 3 rows a rank: together the ranks take the 6 rows one process picks with batch 6 (each row once)
    rows = [dict(i=i) for i in range(10)]
    whole = [r["i"] for r in trainer.batch_for(rows, 4, 6, 1)]
    r0, r1 = ([r["i"] for r in trainer.batch_for(rows, 4, 3, 1, rank, 2)] for rank in (0, 1))
    assert sorted(r0 + r1) == sorted(whole) and len(r0) == len(r1) == 3
    assert [r["i"] for r in trainer.batch_for(rows, 4, 6, 1)] == whole  # a pure function of (seed, step)
    assert [r["i"] for r in trainer.batch_for(rows, 5, 6, 1)] != whole  # another step, another batch


RANK_SCRIPT = r"""
import argparse, json, os, sys, types
import torch
sys.path.insert(0, os.environ["ROOT"])
import trainer
from safetensors.torch import save_file
rank = int(os.environ["RANK"])
w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
v = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
class Weights:
    name, label = "links", "link"
    def save(self, path, extra):
        save_file({"w": w.detach().clone(), "v": v.detach().clone()}, path + ".safetensors")
        open(path + ".json", "w").write("{}")
def loss_fn(batch):  # rank 0: 0.1 w + 0.4 v; rank 1: 0.2 w (no gradient reaches v on rank 1)
    return 0.1 * (rank + 1) * w.sum() + (0.4 * v.sum() if rank == 0 else 0)
system = types.SimpleNamespace(backbones=[types.SimpleNamespace(num_params=lambda: 1000, device=torch.device("cpu"))])
args = argparse.Namespace(lr=0.1, warmup=1, steps=1, resume=False, overwrite=False, out=sys.argv[1], batch_size=1,
                          seed=0, log_every=100, ckpt_every=100, stage="outer")
trainer.train(system, [w, v], loss_fn, [{"q": 1}], args, Weights())
print("GRADS", json.dumps([w.grad.item(), v.grad.item()]))
"""


def test_torchrun_averages_the_gradients_of_its_ranks(tmp_path):
    """Two ranks over gloo. Rank 0's gradient (w, v) = (0.1, 0.4), rank 1's (0.2, none -> 0): the average both apply
    is (0.15, 0.2) (norm 0.25, not clipped); a sum would be (0.3, 0.4), which Adam alone could not tell apart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, ROOT=ROOT, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:  # a rank that failed leaves the other waiting for it: never leave it running
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    for out, _ in outs:
        grads = json.loads(next(l for l in out.splitlines() if l.startswith("GRADS"))[6:])
        assert grads == pytest.approx([0.15, 0.2], abs=1e-12)
    adam = _state(tmp_path / "run", 1)["optimizer"]["state"]
    assert adam[0]["exp_avg"].item() == pytest.approx(0.015) and adam[1]["exp_avg"].item() == pytest.approx(0.02)


def test_a_cut_target_gets_no_end_token_and_the_share_cut_is_reported(capsys):
    """tiny-llama's byte-level tokenizer: one token a letter. Budget 4 tokens:
    "ab"     (2): a b <eos> + padding      -> target mask 1 1 1 0 0
    "abcdef" (6): longer, cut to a b c d, NO end token (padding after it is masked) -> 1 1 1 1 0
    "abcd"   (4): not longer than 4, so it keeps its end token: a b c d <eos>       -> 1 1 1 1 1   (length L = 5)
    Reported: 1 of 3 targets is longer than the budget, 33.3%."""
    from loading import load_backbone
    bb = load_backbone("tiny-llama")
    eos, (a, b, c, d) = bb.tokenizer.eos_token_id, bb.encode("abcd")
    embeds, mask = torch.zeros(3, 2, bb.hidden_size), torch.ones(3, 2, dtype=torch.long)
    full_embeds, full_mask, ids, tmask = losses.append_targets(bb, embeds, mask, ["ab", "abcdef", "abcd"], 4)
    assert ids.tolist() == [[a, b, eos, eos, eos], [a, b, c, d, eos], [a, b, c, d, eos]]
    assert tmask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert full_mask.tolist() == [[1, 1] + m for m in tmask.tolist()] and full_embeds.shape == (3, 7, bb.hidden_size)
    capsys.readouterr()
    assert trainer.report_truncation(bb, ["ab", "abcdef", "abcd"], 4, "answers") == pytest.approx(1 / 3)
    assert "answers: 1/3 targets (33.3%) are longer than --max-target-tokens 4" in capsys.readouterr().out


def test_the_target_budget_is_160_tokens_on_a_cpu_and_2048_on_a_gpu():
    system = lambda kind: types.SimpleNamespace(backbones=[types.SimpleNamespace(device=torch.device(kind))])
    for kind, want in [("cpu", 160), ("cuda", 2048)]:
        args = argparse.Namespace(max_target_tokens=None)
        assert trainer.target_budget(args, system(kind)) == want and args.max_target_tokens == want
    assert trainer.target_budget(argparse.Namespace(max_target_tokens=7), system("cuda")) == 7  # given: kept

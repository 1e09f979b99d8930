"""bench.py's and gradprobe.py's figures against numbers worked out by hand: speed and token ratios against text, KV vs
recompute, milliseconds per step, bandwidth, the floor and x floor, the error against float32, peak memory, the
training-cost rows and the gradient table. A fake clock sets every measured second; each expected value is a literal,
derived in the comment next to it (scripts/planted_errors.py plants an error in each formula: these tests catch it;
time_it itself: test_course.py's test_a6_time_it_times_only_the_repeats)."""
import types

import pytest
import torch

import bench
import trainer


@pytest.fixture()
def clock(monkeypatch):
    """A fake time.perf_counter that advances only when told: measured seconds are the ones a test sets."""
    now = [0.0]
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: now[0], time=lambda: now[0]))
    return types.SimpleNamespace(advance=lambda s: now.__setitem__(0, now[0] + s))


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
    row = dict(model="m", batch=1, mode="off", ms_per_step=ms, floor_ms=floor, rel_error_vs_fp32=0.0, setup_s=0.0)
    bench.judge_floor(row)
    printed = bench._step_row(row)  # the table's row: model, batch, mode, ms/step, floor ms, x floor, ...
    if x is None:  # 1.0 ms under a 1.5 ms floor: impossible, reported
        assert "x_floor" not in row and "1.000 < 1.500" in row["measurement_error"]
        assert printed.split()[5] == "error" and "error: step faster than the floor" in printed
    else:  # 3.0 / 1.5 = 2.0; on the floor exactly: 1.0, not an error
        assert row["x_floor"] == x and "measurement_error" not in row and "error" not in printed


def test_step_table_takes_medians_of_steps_and_floors(clock, monkeypatch):
    """Three repeats of 2 steps taking 0.004, 0.010, 0.006 s: 0.002, 0.005, 0.003 s a step, median 3.000 ms (mean
    would be 3.333). Bandwidth samples 1e9, 4e9, 2e9 bytes/s with 296,192 bytes a step: floors 0.296192, 0.074048,
    0.148096 ms, median 0.148096 ms; x floor = 3.0 / 0.148096 = 20.2571. The mode's first step is made 1% off the
    float32 reference: error 1.0e-02. The floor and the step are sampled in turn."""
    from recursion import System
    system = System(["tiny-llama"])
    bws, runs, real, calls = iter([1e9, 4e9, 2e9]), iter([0.004, 0.010, 0.006]), bench._stepper, []

    def stepper(*a):
        prefill, _, first = real(*a)
        return prefill, lambda state: calls.append("step") or clock.advance(next(runs)), first * 1.01
    monkeypatch.setattr(bench, "_stepper", stepper)
    monkeypatch.setattr(bench, "bandwidth", lambda device: calls.append("bw") or next(bws))
    (row,) = bench.step_times(system, [1], ["off"], prompt_len=8, steps=2, repeats=3)
    assert calls == ["bw", "step"] * 3
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

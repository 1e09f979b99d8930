"""bench.py end to end on tiny models: every part runs, the JSON holds what the README's tables read; the gradient
probe's norms equal norms computed by hand; a step faster than its floor is an error; bad input stops at parsing."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import bench
from agents import System, build_inputs, rollout
from gradprobe import grad_probe
from train_outer import answer_ce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_runs_every_part_and_writes_json(tmp_path):
    cmd = [sys.executable, "bench.py", "--agents", "tiny-llama,tiny-qwen", "--questions", "2", "--rounds", "1,2",
           "--latent-steps", "3", "--max-new-tokens", "6", "--rollout-m", "2,4", "--rollout-batch", "1,2",
           "--step-modes", "off,static", "--out", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.load(open(tmp_path / "bench.json"))
    modes = [(r["mode"], r["rounds"]) for r in res["end_to_end"]]
    assert modes == [("single", 1), ("text", 1), ("latent", 1), ("text", 2), ("latent", 2)]
    for r in res["end_to_end"]:
        assert r["tokens"] > 0 and r["seconds"] > 0
        assert r["latent_steps"] == (0 if r["mode"] != "latent" else 2 * 3 * (2 * r["rounds"] - 1))
        assert ("speedup_vs_text" in r) == (r["mode"] == "latent")
    assert [(r["batch"], r["m"]) for r in res["rollout"]] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert [r["method"] for r in res["training"]][0] == "outer links"
    assert res["training"][0]["trainable"] > 0
    steps = {(r["model"], r["mode"]): r for r in res["step"]}
    assert set(steps) == {(m, x) for m in ("tiny-llama", "tiny-qwen") for x in ("off", "static")}
    for r in steps.values():
        assert "error" not in r and r["ms_per_step"] > 0 and r["floor_ms"] > 0
        assert r["rel_error_vs_fp32"] < 1e-5
    assert "one latent step" in run.stdout and "== report" in run.stdout
    assert [r["rounds"] for r in res["grad"]] == [1, 2] and res["grad_agents"] == "tiny-llama,tiny-qwen"
    for r in res["grad"]:  # the two tiny models share one byte-level vocabulary, so the text hand-over runs
        assert 0 < r["link_norm"] < math.inf and 0 < r["text_norm"] < math.inf and len(r["link_norm_per_step"]) == 3
    assert "grad norm, tiny-llama,tiny-qwen" in run.stdout


def test_bench_sizes_rejects_unknown_names():
    run = subprocess.run([sys.executable, "bench.py", "--sizes", "gpt-5"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "unknown --sizes entry 'gpt-5'" in run.stderr and "Traceback" not in run.stderr


def test_grad_probe_norms_equal_norms_by_hand():
    """Agent 1's round-1 thoughts as a leaf; the answer CE's gradient on them, by hand: through the outer link, and
    through softmax(logits / T) @ embeddings at r=1; through both links and the solver's rollout at r=2."""
    torch.manual_seed(0)
    system = System(["tiny-llama", "tiny-qwen"])
    qs, answers, m, T = bench.QUESTIONS[:2], bench.ANSWERS[:2], 3, 0.5
    link = system.outer["planner->solver"]
    rows = grad_probe(system, qs, answers, [1, 2], m, [T])
    assert system.outer["planner->solver"] is link  # the text hand-over is put back
    p, s = system.backbones
    with torch.no_grad():
        x = rollout(p, system.inner["planner"], *build_inputs(p, [system.prompt(0, q, 0) for q in qs], {}), m)
    x.requires_grad_(True)

    def norm(loss):
        return torch.autograd.grad(loss, x)[0].norm().item()

    def solver_inputs(round_, inbox):
        return build_inputs(s, [system.prompt(1, q, round_) for q in qs], inbox)

    text = lambda h: torch.softmax(p.logits(h) / T, -1) @ s.model.get_input_embeddings().weight
    by_hand_link = norm(answer_ce(s, *solver_inputs(0, {"from_planner": link(x)}), answers, 64))
    by_hand_text = norm(answer_ce(s, *solver_inputs(0, {"from_planner": text(x)}), answers, 64))
    solver_thoughts = rollout(s, system.inner["solver"], *solver_inputs(0, {"from_planner": link(x)}), m)
    fb = {"feedback_solver": system.outer["solver->planner"](solver_thoughts)}
    planner_inputs = build_inputs(p, [system.prompt(0, q, 1) for q in qs], fb)
    planner_thoughts = rollout(p, system.inner["planner"], *planner_inputs, m)
    by_hand_r2 = norm(answer_ce(s, *solver_inputs(1, {"from_planner": link(planner_thoughts)}), answers, 64))
    assert [(r["rounds"], r["temperature"]) for r in rows] == [(1, T), (2, T)]
    assert rows[0]["link_norm"] == pytest.approx(by_hand_link, rel=1e-5)
    assert rows[0]["text_norm"] == pytest.approx(by_hand_text, rel=1e-5)
    assert rows[0]["text_over_link"] == pytest.approx(by_hand_text / by_hand_link, rel=1e-5)
    assert rows[1]["link_norm"] == pytest.approx(by_hand_r2, rel=1e-5)
    assert by_hand_link != pytest.approx(by_hand_r2, rel=1e-2)  # the two configurations are told apart
    assert math.hypot(*rows[0]["link_norm_per_step"]) == pytest.approx(rows[0]["link_norm"], rel=1e-5)


@pytest.mark.parametrize("bytes_per_s, faster", [(1.0, True), (1e18, False)])
def test_step_faster_than_floor_is_an_error(monkeypatch, capsys, bytes_per_s, faster):
    """A bandwidth of 1 byte/s puts the floor far above any step: reported as a measurement error, not a ratio.
    The floor and the step are sampled in turn."""
    system = System(["tiny-llama"])
    calls, real = [], bench._stepper

    def spy(*a):
        prefill, run, first = real(*a)
        return prefill, lambda state: (calls.append("step"), run(state))[1], first
    monkeypatch.setattr(bench, "_stepper", spy)
    monkeypatch.setattr(bench, "bandwidth", lambda device: (calls.append("bw"), bytes_per_s)[1])
    (row,) = bench.step_times(system, [1], ["off"], prompt_len=8, steps=2, repeats=3)
    assert calls == ["bw", "step"] * 3
    assert row["floor_ms"] == pytest.approx(1000 * bench.step_bytes(system.backbones[0]) / bytes_per_s)
    bench.report(dict(machine="cpu", agents="tiny-llama", dtype="float32", seconds=0, step=[row]))
    out = capsys.readouterr().out
    if faster:
        assert "x_floor" not in row and "step faster than the floor" in row["measurement_error"]
        assert "error: step faster than the floor" in out
    else:
        assert "measurement_error" not in row and row["x_floor"] == row["ms_per_step"] / row["floor_ms"]
        assert "error" not in out.split("one latent step")[1]


@pytest.mark.parametrize("bad, option", [
    (["--rounds", "abc"], "--rounds"), (["--questions", "0"], "--questions"), (["--step-batch", "0"], "--step-batch"),
    (["--skip", "nonsense"], "--skip"), (["--rollout-m", "-4"], "--rollout-m"), (["--rounds", "0"], "--rounds"),
    (["--questions", "9"], "--questions"), (["--grad-temperature", "0"], "--grad-temperature"),
    (["--rollout-batch", "1,x"], "--rollout-batch"), (["--latent-steps", "-1"], "--latent-steps")])
def test_bad_input_is_one_line_exit_2_at_parsing(capsys, tmp_path, bad, option):
    """Everything else skipped, so bad input the parser let through would run (and return 0) instead of exiting 2."""
    argv = ["--agents", "tiny-llama", "--skip", ",".join(bench.PARTS), "--out", str(tmp_path)] + bad
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"error: argument {option}: ") and err.count("\n") == 1


def test_part_5_alone_names_the_agents_it_ran_on(tmp_path, capsys):
    argv = ["--agents", "tiny-qwen", "--grad-agents", "tiny-llama,tiny-llama", "--skip", "e2e,rollout,train,step",
            "--questions", "1", "--rounds", "1", "--latent-steps", "2", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("== report")]
    res = json.load(open(tmp_path / "bench.json"))
    assert res["agents"] == res["grad_agents"] == "tiny-llama,tiny-llama"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # the atomic write left no temporary file
    assert len(header) == 1 and "tiny-llama,tiny-llama" in header[0] and "tiny-qwen" not in header[0], header

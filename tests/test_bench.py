"""bench.py end to end on tiny models: every part runs, the JSON holds what the README's tables read."""
import json
import os
import subprocess
import sys

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


def test_bench_sizes_rejects_unknown_names():
    run = subprocess.run([sys.executable, "bench.py", "--sizes", "gpt-5"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "unknown --sizes entry 'gpt-5'" in run.stderr and "Traceback" not in run.stderr

"""scripts/reproduce.sh --tiny: the paper's whole experiment (train inner, outer, LoRA, full; every method under the
paper's protocol; the efficiency and training-cost tables) end to end on tiny models, and a second run that redoes
nothing."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["single", "lora", "full", "moa", "textgrad", "text", "latent"]


def test_reproduce_tiny_runs_every_step_then_skips_them_all(tmp_path):
    out, env = tmp_path / "run", dict(os.environ, PYTHON=sys.executable)
    run = lambda: subprocess.run(["bash", "scripts/reproduce.sh", "--tiny", str(out)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=900)
    first = run()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    steps = [l[3:] for l in first.stdout.splitlines() if l.startswith(">> ")]
    assert steps == ["train-inner", "train-outer", "train-lora", "train-full", "eval-gsm8k", "eval-math500", "bench"]
    tables = (out / "tables.md").read_text()
    rows = {l.split(" | ")[0][2:]: l for l in tables.splitlines() if l.startswith("| ") and " ± " in l}
    assert list(rows) == METHODS and all("—" not in r for r in rows.values())  # every method on both benchmarks
    assert [l.split(" | ")[1] for l in tables.splitlines() if l.startswith("| latent | ") and " ± " not in l] == [
        "1", "2", "3"]  # Table 2: r = 1, 2, 3
    assert "| outer links |" in tables and "| full fine-tuning |" in tables  # Table 5
    kept = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "tables.md"}
    second = run()
    assert second.returncode == 0, second.stderr[-2000:]
    assert [l for l in second.stdout.splitlines() if l.startswith(">> ")] == [f">> {s}: done, skipped" for s in steps]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing was written again

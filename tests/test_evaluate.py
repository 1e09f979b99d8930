"""evaluate.py and benchmarks.py: readable rows, kill + resume, protocols, file names, bad input, the new
benchmarks (MBPP+, HumanEval+ plus tests; LiveCodeBench's format; Bamboogle / GPQA from the user's path), --compare."""
import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

import benchmarks
import evaluate
import files
from helpers import canonical

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--agents", "tiny-llama", "--benchmark", "gsm8k", "--max-new-tokens", "8", "--fast", "off"]


def rows_of(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


# ---- rows a person can read ---------------------------------------------------------------------------------

def test_a_row_holds_question_texts_prediction_gold_and_rule(tmp_path, monkeypatch):
    # the model is a stub that answers every question "\boxed{18}": the first GSM8K question's gold
    class Stub:
        backbones = [None]

        def run(self, questions, mode, rounds, steps, max_new_tokens, temperature, top_p, final_answer):
            return [dict(text="so \\boxed{18}", tokens={"solver": 5}, latent_steps=0, seconds=1.0,
                         written=["plan: add", "so \\boxed{18}"], continued=False) for _ in questions]

    monkeypatch.setattr(evaluate, "build_system", lambda a, method: Stub())
    assert evaluate.main(TINY + ["--limit", "2", "--out", str(tmp_path)]) == 0
    (f,) = tmp_path.glob("*.jsonl")
    first, second = rows_of(f)
    assert "Janet’s ducks" in f.read_text(encoding="utf-8")  # readable as it stands: no \u escapes
    assert first["question"].startswith("Janet’s ducks lay 16 eggs")
    assert first["texts"] == ["plan: add", "so \\boxed{18}"]
    assert (first["prediction"], first["gold"], first["correct"]) == ("18", "18", True)
    assert first["rule"] and second["gold"] == "3" and second["correct"] is False
    assert first["tokens"] == {"solver": 5} and first["seconds"] == pytest.approx(0.5)  # a batch of 2 shares 1 s
    summary = json.loads(f.with_name(f.name.replace(".jsonl", ".summary.json")).read_text())
    assert (summary["correct"], summary["n"], summary["settings"]["max_new_tokens"]) == (1, 2, 8)


def test_file_names_keep_methods_agents_and_links_apart(tmp_path):
    from checkpoints import save_links
    from links import RecursiveLink
    ck = tmp_path / "outer"
    save_links(str(ck / "links"), {"inner.solver": RecursiveLink(64, 64)}, {})  # --links is checked at parsing
    stem = lambda *extra: evaluate.parse(["--agents", "smollm,tiny-qwen", "--limit", "1", "--out", "o", *extra])[2][0][1]
    untrained, trained = stem("--method", "latent"), stem("--method", "latent", "--links", str(ck / "links"))
    assert os.path.basename(untrained) == "gsm8k-latent-smollm+tiny-qwen-r2m8-links=untrained"
    assert os.path.basename(trained).startswith("gsm8k-latent-smollm+tiny-qwen-r2m8-links=links-")
    assert os.path.basename(stem("--method", "single")) == "gsm8k-single-tiny-qwen"  # single: the final agent only
    assert stem("--method", "single", "--protocol", "paper").endswith("-paper")
    assert evaluate.safe("a/b c:d") == "a_b_c_d"


# ---- nothing lost on a kill ---------------------------------------------------------------------------------

def _cmd(out, *extra):
    return [sys.executable, os.path.join(HERE, "evaluate.py"), *TINY, "--limit", "10",
            "--batch-size", "2", "--out", str(out), *extra]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    full = subprocess.run(_cmd(tmp_path / "full"), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    (ref,) = (tmp_path / "full").glob("*.jsonl")
    proc = subprocess.Popen(_cmd(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp_path / "cut" / ref.name
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = rows_of(path)
    assert 2 <= len(kept) < 10
    again = subprocess.run(_cmd(tmp_path / "cut", "--resume"), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    got, want = rows_of(path), rows_of(ref)
    assert [r["id"] for r in got] == [r["id"] for r in want]  # same ids, once each, in order
    assert [r["texts"] for r in got] == [r["texts"] for r in want]
    assert [r["prediction"] for r in got] == [r["prediction"] for r in want]
    assert got[:len(kept)] == kept  # what was on disk at the kill stayed as it was


def test_existing_output_is_never_overwritten_and_resume_checks_settings(tmp_path, capsys):
    base = TINY + ["--limit", "2", "--out", str(tmp_path)]
    assert evaluate.main(base) == 0
    capsys.readouterr()
    (f,) = tmp_path.glob("*.jsonl")
    before = f.read_text()
    for extra, words in [([], ["--resume", "--overwrite"]), (["--resume", "--temperature", "0.5"], ["temperature"]),
                         (["--resume", "--overwrite"], ["--resume", "--overwrite"])]:
        with pytest.raises(SystemExit) as e:
            evaluate.parse(base + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and all(w in err for w in words), err
    assert f.read_text() == before
    assert evaluate.main(base + ["--resume", "--limit", "3"]) == 0  # a longer --limit continues the same file
    assert [r["id"] for r in rows_of(f)] == [0, 1, 2]
    assert evaluate.main(base + ["--overwrite", "--limit", "1"]) == 0
    assert [r["id"] for r in rows_of(f)] == [0]


def test_a_cut_last_line_is_dropped_on_resume(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text('{"seed": 0, "id": 1}\n{"seed": 0, "id"')
    assert files.read_appended(str(f)) == [{"seed": 0, "id": 1}]
    assert f.read_text() == '{"seed": 0, "id": 1}\n'


# ---- the new benchmarks -------------------------------------------------------------------------------------

PLUS = [(name, i) for name, n in [("mbppplus", 378), ("humanevalplus", 164)]
        for i in sorted(random.Random(0).sample(range(n), 12))]


def test_plus_benchmarks_load_with_their_plus_tests():
    mbpp, he = benchmarks.load_benchmark("mbppplus"), benchmarks.load_benchmark("humanevalplus")
    assert (len(mbpp), len(he)) == (378, 164)
    assert mbpp[0]["tests"].count("inputs = ") == 1 and he[0]["tests"].rstrip().endswith("check(has_close_elements)")
    assert "import numpy" not in mbpp[0]["tests"]  # the pure-Python stand-in instead


@pytest.mark.sandbox
def test_plus_canonical_solutions_pass_and_wrong_ones_fail():
    items = {n: benchmarks.load_benchmark(n) for n in ("mbppplus", "humanevalplus")}
    picked = [items[n][i] for n, i in PLUS]
    with ThreadPoolExecutor(2) as pool:
        good = list(pool.map(lambda it: benchmarks.score(it, canonical(it), timeout=30), picked))
    assert [it["id"] for it, g in zip(picked, good) if not g[1]] == []
    # a solution that passes the base tests but not the plus ones: MBPP+ 3 (is_not_prime) fails on n = 1 ... 7919
    it = next(i for i in items["mbppplus"] if i["id"] == 3)
    weak = "def is_not_prime(n):\n    return n in (10, 35)\n"
    assert not benchmarks.score(it, f"```python\n{weak}```")[1]


@pytest.mark.sandbox
def test_allclose_standin_and_find_zero_fix():
    ns = {}
    exec(benchmarks.NUMPY_STANDIN, ns)
    np = ns["np"]
    assert np.allclose([1.0, [2.0]], [1.0 + 1e-9, [2.0]], atol=1e-6) and not np.allclose([1.0], [1.1], atol=1e-6)
    assert not np.allclose([1.0, 2.0], [1.0], atol=1)
    it = next(i for i in benchmarks.load_benchmark("humanevalplus") if i["id"] == "HumanEval/32")
    assert benchmarks.score(it, canonical(it), timeout=30)[1]
    assert not benchmarks.score(it, "```python\ndef find_zero(xs):\n    return -100.0\n```", timeout=30)[1]


def _lcb_row(qid, public, private, starter="", func=None):
    return dict(question_title=qid, question_content=f"Problem {qid}.", platform="atcoder", question_id=qid,
                contest_id="c1", contest_date="2025-02-01T00:00:00", starter_code=starter, difficulty="easy",
                public_test_cases=json.dumps(public), private_test_cases=private,
                metadata=json.dumps({"func_name": func} if func else {}))


def _write_lcb(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.sandbox
def test_livecodebench_stdin_and_functional_tests_run_in_the_sandbox(tmp_path):
    stdin_t = [{"input": "3 4\n", "output": "7\n", "testtype": "stdin"}]
    private = base64.b64encode(zlib.compress(json.dumps(
        [{"input": "10 -2\n", "output": "8\n", "testtype": "stdin"}]).encode())).decode()
    call_t = [{"input": "[1, 2, 3]\n2", "output": "[2, 4, 6]", "testtype": "functional"}]
    starter = "class Solution:\n    def scale(self, xs: List[int], k: int) -> List[int]:\n        "
    path = _write_lcb(tmp_path / "lcb.jsonl", [_lcb_row("abc1", stdin_t, private),
                                               _lcb_row("lc2", call_t, json.dumps([]), starter, "scale")])
    a, b = benchmarks.load_benchmark("livecodebench", lcb_path=path)
    assert len(a["tests"]) == 2 and "standard input" in a["question"] and "Starter" not in a["question"]
    assert "class Solution" in b["question"] and b["func_name"] == "scale"
    good_a = "```python\nx, y = map(int, input().split())\nprint(x + y)\n```"
    assert benchmarks.score(a, good_a)[1]
    assert not benchmarks.score(a, "```python\nx, y = map(int, input().split())\nprint(x * y + 0 * y)\n```")[1]
    assert not benchmarks.score(a, "```python\nprint(7)\n```")[1]  # passes the public test, not the private one
    good_b = "```python\nclass Solution:\n    def scale(self, xs, k):\n        return [x * k for x in xs]\n```"
    assert benchmarks.score(b, good_b)[1]
    assert not benchmarks.score(b, good_b.replace("x * k", "x + k"))[1]
    assert not benchmarks.score(b, "```python\nimport os\nos.system('true')\n```")[1]


def test_livecodebench_refuses_pickled_tests(tmp_path):
    import pickle
    blob = base64.b64encode(zlib.compress(pickle.dumps(json.dumps([])))).decode()
    path = _write_lcb(tmp_path / "lcb.jsonl", [_lcb_row("p1", [{"input": "1\n", "output": "1\n"}], blob)])
    with pytest.raises(benchmarks.UserError, match="pickled"):
        benchmarks.load_benchmark("livecodebench", lcb_path=path)


def test_bamboogle_from_env_is_scored_by_exact_match_and_f1(tmp_path, monkeypatch):
    f = tmp_path / "bamboogle.jsonl"
    f.write_text(json.dumps({"question": "Who?", "answer": "George VI\n"}) + "\n")
    monkeypatch.setenv("BAMBOOGLE_PATH", str(f))
    (it,) = benchmarks.load_benchmark("bamboogle")
    assert it["gold"] == "George VI"
    pred, ok, extra = benchmarks.score(it, "The answer is \\boxed{King George VI}.")
    assert (pred, ok) == ("King George VI", False) and extra["f1"] == pytest.approx(0.8)
    assert benchmarks.score(it, "\\boxed{george vi}")[1]


def test_llm_judge_replaces_exact_match(monkeypatch):
    it = dict(question="Who?", gold="George VI", kind="qa")
    monkeypatch.setattr(evaluate, "judge_answer", lambda bb, q, g, p: (p == "King George VI", "yes"))
    ok, extra = evaluate.judged(None, it, "King George VI", False, {"f1": 0.8, "rule": "exact match"})
    assert ok and extra["rule"] == "llm judge" and extra["exact_match"] is False


def test_judge_answer_asks_a_backbone(monkeypatch):
    from loading import load_backbone
    bb = load_backbone("tiny-llama")
    monkeypatch.setattr(bb, "generate", lambda e, m, max_new_tokens: (["Yes."], [2]))
    assert benchmarks.judge_answer(bb, "q", "a", "a") == (True, "Yes.")
    monkeypatch.setattr(bb, "generate", lambda e, m, max_new_tokens: (["no"], [1]))
    assert benchmarks.judge_answer(bb, "q", "a", "b")[0] is False


# ---- one comparison table -----------------------------------------------------------------------------------

def test_compare_with_lora_and_full_through_trained_backbone(tmp_path, monkeypatch, capsys):
    calls = []

    def trained_backbone(backbone, method, path):
        calls.append((backbone.name, method, os.path.basename(path)))
        return backbone

    monkeypatch.setattr(evaluate, "trained_backbone", trained_backbone)
    ad, wt = tmp_path / "adapter", tmp_path / "weights"
    ad.mkdir()
    wt.mkdir()
    (ad / "a.safetensors").write_bytes(b"1")
    (wt / "w.safetensors").write_bytes(b"2")
    args = ["--compare", "single,lora,full,moa,textgrad,text,latent", "--agents", "tiny-llama,tiny-qwen", "--limit", "2",
            "--max-new-tokens", "4", "--rounds", "1", "--latent-steps", "2", "--adapter", str(ad), "--weights",
            str(wt), "--out", str(tmp_path / "o"), "--fast", "off", "--plot"]
    assert evaluate.main(args) == 0
    assert calls == [("tiny-qwen", "lora", "adapter"), ("tiny-qwen", "full", "weights")]
    out = capsys.readouterr().out
    table = [l.split()[1] for l in out.splitlines() if l.startswith("gsm8k ")]
    assert table == ["single", "lora", "full", "moa", "textgrad", "text", "latent"]
    files = sorted(p.name for p in (tmp_path / "o").glob("*.jsonl"))
    assert len(files) == 7 and any("adapter=adapter-" in n for n in files)
    moa_rows, tg_rows = (rows_of(tmp_path / "o" / next(n for n in files if f"-{m}-" in n)) for m in ("moa", "textgrad"))
    assert set(moa_rows[0]["tokens"]) == {"proposer1", "proposer2", "aggregator"} and len(moa_rows[0]["texts"]) == 5
    assert set(tg_rows[0]["tokens"]) == {"solver", "evaluator", "critic", "optimiser"} and len(tg_rows[0]["texts"]) == 10
    ids = {n: [r["id"] for r in rows_of(tmp_path / "o" / n)] for n in files}
    assert all(v == [0, 1] for v in ids.values())
    latent = next(n for n in files if "-latent-" in n)
    assert rows_of(tmp_path / "o" / latent)[0]["latent_steps"] == 2 * (1 * 2 - 1)
    assert "matplotlib" in out or (tmp_path / "o" / "gsm8k-compare.png").exists()

"""--protocol paper (paper App. B.3): the settings table of docs/method.md §9 against the code, the "Final Answer:"
ending of a cut answer, and one time limit per code test case."""
import ast
import contextlib
import io
import json
import os
import re
import time

import pytest
import torch

import baselines
import benchmarks
import evaluate
import moa
import protocol
import sandbox
import textgrad
import trainer
from recursion import System
from protocol import FINAL_ANSWER
from sandbox import run_tests
from helpers import scripted

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the settings table (docs/method.md §9) ---------------------------------------------------------------------

def settings_table():
    """[(setting, here, code reference)] of docs/method.md §9's table."""
    text = open(os.path.join(HERE, "docs", "method.md"), encoding="utf-8").read()
    section = text.split("## 9. Settings and where they come from", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| setting") and not line.startswith("|---")]
    return [(r[0], r[1], r[2].strip("`")) for r in rows]


def cli_default(script, flag):
    """A script's command-line default, as its --help states it."""
    module = __import__(script.removesuffix(".py"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main(["--help"])
    text = " ".join(out.getvalue().split())
    m = re.search(re.escape(flag) + r" [A-Z_]+ .*?\(default: ([^)]*)\)", text)
    assert m, f"{script} {flag}: no default in --help"
    return ast.literal_eval(m.group(1))


def code_value(ref):
    m = re.fullmatch(r"(\w+\.py) (--[\w-]+)", ref)
    if m:
        return cli_default(*m.groups())
    return eval(ref, {"protocol": protocol, "trainer": trainer, "baselines": baselines, "moa": moa,  # the table's
                      "textgrad": textgrad})                                                      # references


def test_the_settings_table_matches_the_code():
    rows = settings_table()
    assert len(rows) >= 30
    wrong = [(name, here, ref, code_value(ref)) for name, here, ref in rows
             if ast.literal_eval(here) != code_value(ref)]
    assert wrong == []
    named = {ref for _, _, ref in rows}  # every benchmark has its budget in the table
    assert {f'protocol.PAPER_TOKENS["{b}"]' for b in benchmarks.BENCHMARKS} <= named


def test_the_paper_protocol_is_built_from_those_constants():
    for name in benchmarks.BENCHMARKS:
        kind = "code" if name in ("humaneval", "humanevalplus", "mbpp", "mbppplus") else (
            "lcb" if name == "livecodebench" else "math")
        s = protocol.settings("paper", name, kind)
        code = kind in ("code", "lcb")
        assert s == dict(max_new_tokens=protocol.PAPER_TOKENS[name],
                         temperature=protocol.PAPER_CODE_TEMPERATURE if code else protocol.PAPER_TEMPERATURE,
                         top_p=protocol.PAPER_TOP_P, seeds=protocol.PAPER_SEEDS,
                         samples=protocol.PAPER_AIME_SAMPLES if name.startswith("aime") else 1,
                         rounds=protocol.PAPER_ROUNDS, latent_steps=protocol.PAPER_LATENT_STEPS,
                         final_answer_tokens=(protocol.FINAL_ANSWER_CODE_TOKENS if code
                                              else protocol.FINAL_ANSWER_TOKENS),
                         test_timeout=protocol.SECONDS_PER_TEST), name


def _runs(tmp_path, *argv):
    return evaluate.parse(["--agents", "tiny-llama,tiny-llama", "--out", str(tmp_path), *argv])


def test_paper_protocol_settings_line_and_overrides(tmp_path):
    a, _, [(st, stem)] = _runs(tmp_path, "--protocol", "paper", "--benchmark", "math500", "--method", "latent")
    assert evaluate.settings_line(st, a) == (
        "settings (paper protocol, math500, latent): budget 2000, T 0.6, top-p 0.95, r 3, m 32, 5 seeds, accuracy, "
        "'Final Answer:' ending +64 tokens, 10 s per test case")
    assert (st["rounds"], st["latent_steps"], st["seeds"]) == (3, 32, [0, 1, 2, 3, 4])
    assert stem.endswith("-r3m32-links=untrained-paper")
    a, _, [(st, _)] = _runs(tmp_path, "--protocol", "paper", "--temperature", "0.3", "--seeds", "2")  # gsm8k
    assert (st["temperature"], st["seeds"], st["max_new_tokens"], st["top_p"]) == (0.3, [0, 1], 2000, 0.95)
    assert _runs(tmp_path, "--protocol", "paper", "--benchmark", "mbppplus")[2][0][0]["temperature"] == 0.2  # code
    a, _, [(st, _)] = _runs(tmp_path, "--protocol", "paper", "--benchmark", "mbppplus", "--method", "latent",
                            "--rounds", "1", "--latent-steps", "4", "--max-new-tokens", "9", "--temperature", "0",
                            "--top-p", "0.5", "--seeds", "2", "--final-answer-tokens", "0", "--test-timeout", "3")
    assert (st["rounds"], st["latent_steps"], st["max_new_tokens"], st["temperature"], st["top_p"], len(st["seeds"]),
            st["final_answer_tokens"], st["seconds_per_test"]) == (1, 4, 9, 0.0, 0.5, 2, 0, 3.0)
    a, _, [(st, _)] = _runs(tmp_path, "--benchmark", "math500", "--method", "latent")  # quick keeps its own
    assert (st["rounds"], st["latent_steps"], st["max_new_tokens"], st["final_answer_tokens"]) == (2, 8, 256, 0)
    assert (st["temperature"], st["seeds"], st["samples"]) == (0.0, [0], 1)  # greedy, one seed, one sample
    _, _, [(st, _)] = _runs(tmp_path, "--protocol", "paper", "--benchmark", "aime25", "--method", "latent")
    assert (st["samples"], st["max_new_tokens"]) == (10, 16000)


# ---- the "Final Answer:" ending ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["single", "latent", "text"])
def test_a_cut_answer_gets_the_final_answer_ending_and_a_finished_one_does_not(mode, monkeypatch):
    system = System(["tiny-llama", "tiny-llama"])  # one shared backbone: every agent's generate is scripted
    bb = system.backbones[-1]
    cut, done = "Let x = 3. Then 2x + 1 = 7, so the answer", "It is \\boxed{5}."
    early = [(["plan a", "plan b"], [11, 12], [True, True])] if mode == "text" else []  # the planner writes first
    calls = scripted(monkeypatch, bb, early + [([cut, done], [20, 6], [False, True]), (["\\boxed{7}"], [4], [True])])
    recs = system.run(["What is 2*3+1?", "What is 2+3?"], mode, rounds=1, latent_steps=2, max_new_tokens=20,
                      final_answer=32)
    assert len(calls) == len(early) + 2
    first, ending = calls[-2], calls[-1]
    assert len(ending["rows"]) == 1 and ending["max_new_tokens"] == 32  # only the cut row, with the ending's budget
    prompt = first["rows"][0]  # exactly what the model read: its prompt, the cut text, then "Final Answer:"
    read = torch.tensor(bb.encode(cut + FINAL_ANSWER))
    assert torch.equal(ending["rows"][0], torch.cat([prompt, bb.embed(read)]))
    assert bb.tokenizer.decode(read).endswith("answer\nFinal Answer:")
    assert recs[0]["text"] == f"{cut}\nFinal Answer: \\boxed{{7}}" and recs[0]["continued"]
    assert recs[1]["text"] == done and not recs[1]["continued"]
    assert recs[0]["tokens"]["solver"] == 24 and recs[1]["tokens"]["solver"] == 6  # the ending's tokens count
    assert recs[0]["written"][-1] == recs[0]["text"]


def test_no_ending_when_it_is_off_or_nothing_was_cut(monkeypatch):
    system = System(["tiny-llama", "tiny-llama"])
    bb = system.backbones[-1]
    for final, ended in [(0, [False]), (32, [True])]:
        calls = scripted(monkeypatch, bb, [(["partial"], [20], ended)])
        rec = system.run(["Q?"], "single", max_new_tokens=20, final_answer=final)[0]
        assert len(calls) == 1 and rec["text"] == "partial" and not rec["continued"] and rec["tokens"] == {"solver": 20}


def test_generate_says_whether_a_row_was_cut():
    system = System(["tiny-llama"])
    bb = system.backbones[0]
    ids = torch.tensor([bb.encode("Hello there")])
    texts, counts, ended = bb.generate(bb.embed(ids), torch.ones_like(ids), max_new_tokens=3, with_end=True)
    assert counts == [3] and ended == [False]
    eos = bb.eos_ids
    try:
        bb.eos_ids = set(range(bb.model.config.vocab_size))  # every token ends the text: the first one does
        texts, counts, ended = bb.generate(bb.embed(ids), torch.ones_like(ids), max_new_tokens=3, with_end=True)
    finally:
        bb.eos_ids = eos
    assert counts == [1] and ended == [True]


def test_rows_record_the_ending_and_count_its_tokens(tmp_path):
    """evaluate.py on tiny-llama: a 3-token budget cuts every answer; with the ending on, each row says so and
    counts up to 5 more tokens; with it off, none does."""
    for flag, continued in [("5", True), ("0", False)]:
        out = tmp_path / flag
        argv = ["--agents", "tiny-llama", "--benchmark", "gsm8k", "--limit", "2", "--max-new-tokens", "3",
                "--final-answer-tokens", flag, "--out", str(out)]
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert evaluate.main(argv) == 0
        assert f"'Final Answer:' ending {'+5 tokens' if continued else 'off'}" in printed.getvalue()
        [path] = [p for p in out.iterdir() if p.suffix == ".jsonl"]
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["continued"] for r in rows] == [continued] * 2
        for r in rows:
            assert ("\nFinal Answer:" in r["texts"][-1]) == continued
            n = r["tokens"]["solver"]
            assert 3 < n <= 8 if continued else n == 3


# ---- one time limit per code test case ---------------------------------------------------------------------------

SLOW = "import time\ntime.sleep(0.6)\nassert f() == 1"


@pytest.mark.sandbox
def test_each_test_case_gets_its_own_limit():
    r = run_tests("def f():\n    return 1", [SLOW] * 3, timeout=1)
    assert r.passed, r.stderr
    shared = run_tests("def f():\n    return 1", "\n".join([SLOW] * 3), timeout=1)  # the three as one case: 1.8 s
    assert not shared.passed and shared.timed_out


@pytest.mark.sandbox
def test_a_case_past_its_limit_fails_the_sample_at_that_limit():
    t0 = time.time()
    r = run_tests("def f():\n    return 1", ["assert f() == 1", "import time\ntime.sleep(2)"], timeout=1)
    assert not r.passed and r.timed_out and "test case 2 ran past its 1 s limit" in r.stderr
    assert time.time() - t0 < 1.9  # cut at its own second, not after the 2 s sleep or the whole run's limit
    ignores = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef f():\n    return 1"
    r = run_tests(ignores, ["import time\ntime.sleep(1.5)"], timeout=1)  # the alarm blocked: the clock still says
    assert not r.passed and r.timed_out


def test_assert_style_tests_split_into_cases():
    he = benchmarks.load_benchmark("humaneval")[0]
    cases = benchmarks.test_cases(he["tests"])
    assert "candidate = has_close_elements" in cases
    asserts = [c for c in cases if c.startswith("assert candidate(")]
    assert len(asserts) == he["tests"].count("assert candidate(") == 7
    mbpp = benchmarks.load_benchmark("mbpp")[0]
    same = lambda src: [ast.dump(n) for n in ast.parse(src).body]  # the same statements, one per case
    assert [same(c) for c in benchmarks.test_cases(mbpp["tests"])] == [[n] for n in same(mbpp["tests"])]
    assert len(benchmarks.test_cases(mbpp["tests"])) == 3
    plus = benchmarks.load_benchmark("mbppplus")[0]
    cases = benchmarks.test_cases(plus["tests"])
    per_input = [c for c in cases if re.match(r"\(i, \(inp, exp\)\) = _cases_\d+\[\d+\]\n", c)]
    inputs = ast.literal_eval(plus["tests"].split("inputs = ", 1)[1].split("\n", 1)[0])
    assert len(per_input) == len(inputs) > 100  # one case per input
    assert benchmarks.test_cases("def broken(:\n") == ["def broken(:\n"]


@pytest.mark.sandbox
def test_scoring_gives_each_benchmark_test_its_own_limit(tmp_path):
    """MBPP item 11 has three asserts; an answer that takes 0.6 s per call passes at 1 s per case."""
    it = next(i for i in benchmarks.load_benchmark("mbpp") if i["id"] == 11)
    slow = it["gold"] + ("\n_fast = remove_Occ\ndef remove_Occ(s, ch):\n    import time\n    time.sleep(0.6)\n"
                         "    return _fast(s, ch)\n")
    assert len(benchmarks.test_cases(it["tests"])) == 3
    assert benchmarks.score(it, f"```python\n{slow}\n```", timeout=1)[1]
    assert not benchmarks.score(it, f"```python\n{slow.replace('0.6', '1.5')}\n```", timeout=1)[1]
    tests = [{"input": f"{k}\n", "output": f"{k + 1}\n", "testtype": "stdin"} for k in range(3)]
    lcb = dict(id="slow", kind="lcb", tests=tests, func_name=None)
    answer = "```python\nimport time\ntime.sleep(0.6)\nprint(int(input()) + 1)\n```"
    assert benchmarks.score(lcb, answer, timeout=1)[1]
    assert not benchmarks.score(lcb, answer.replace("0.6", "1.5"), timeout=1)[1]


@pytest.mark.sandbox
def test_the_whole_run_is_killed_after_the_sum_of_its_limits_plus_slack():
    """Three cases at 1 s each: the program and the cases may take 4 s, plus CASE_SLACK; a case that blocks the
    alarm and never ends is killed by the outer limit then, not before."""
    blocks = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef f():\n    return 1"
    t0 = time.time()
    r = run_tests(blocks, ["assert f() == 1", "assert f() == 1", "while True:\n    pass"], timeout=1)
    took = time.time() - t0
    assert not r.passed and r.timed_out
    assert 4 + sandbox.CASE_SLACK - 0.5 < took < 4 + sandbox.CASE_SLACK + 5, took


@pytest.mark.sandbox
def test_the_whole_run_stops_at_the_cap_however_many_cases(monkeypatch):
    """Many cases whose limits add up to hours: code that blocks the alarm is still ended at RUN_CAP."""
    monkeypatch.setattr(sandbox, "RUN_CAP", 3.0)
    blocks = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef f():\n    return 1"
    t0 = time.time()
    r = run_tests(blocks, ["while True:\n    pass"] + ["assert f() == 1"] * 1000, timeout=10)
    took = time.time() - t0
    assert not r.passed and r.timed_out and 2.5 < took < 3 + 5, took

"""Strict scoring and every benchmark's loader + scorer on canonical answers."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import evaluate
import sandbox
from benchmarks import USER_PATHS
from scoring import extract_choice, extract_math, last_boxed, math_equal, qa_scores, score_choice, score_math

# (model output, gold, expected verdict)
MATH_CASES = [
    ("so the answer is \\boxed{14/3}", "14/3", True),
    ("\\boxed{4}", "14/3", False),                       # the lenient first-integer scorer's false positive
    ("I get 14/3, so \\boxed{4}", "4", True),             # the LAST boxed counts, not the first number
    ("The answer is 14 or maybe 3. \\boxed{14/3}", "4", False),
    ("\\boxed{\\frac{14}{3}}", "14/3", True),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", True),
    ("\\boxed{\\frac{28}{6}}", "14/3", True),              # exact rational equivalence
    ("\\boxed{4.6667}", "14/3", False),                  # close is not equal
    ("\\boxed{1,000}", "1000", True),                    # thousands separator
    ("\\boxed{1000.00}", "1000", True),                  # trailing zeros
    ("\\boxed{27.0}", "27", True),
    ("\\boxed{\\$18}", "18", True),
    ("\\boxed{18 \\text{ dollars}}", "18", True),         # units
    ("\\boxed{45^\\circ}", "45", True),
    ("\\boxed{x = 5}", "5", True),
    ("\\boxed{-\\frac{1}{2}}", "-0.5", True),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3,\\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", False),  # no symbolic algebra: stated, not guessed
    ("The answer is 72", "72", True),                    # explicit final-answer line as fallback
    ("Final answer: 72.", "72", True),
    ("We compute 48 + 24 = 72 clips.", "72", False),      # no boxed, no answer line: unparseable = wrong
    ("\\boxed{7", "7", False),                           # unclosed brace
    ("\\boxed{\\frac{1}{2}} and then \\boxed{3}", "3", True),
    ("\\boxed{12}", "120", False),
    ("\\boxed{0.5}", "1/2", True),
    ("\\boxed{50\\%}", "50", True),
]


@pytest.mark.parametrize("text,gold,ok", MATH_CASES)
def test_math_scoring(text, gold, ok):
    assert score_math(text, gold)[1] is ok


def test_last_boxed_balances_braces():
    assert last_boxed("\\boxed{\\frac{a}{b}} x \\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("nothing here") is None
    assert extract_math("no answer at all") is None


CHOICE_CASES = [
    ("The answer is (C).", "C", True),
    ("Answer: B", "B", True),
    ("\\boxed{D}", "D", True),
    ("I think A is tempting, but the answer is (B)", "B", True),
    ("I am not sure.", "A", False),                      # the released scorer defaults to "A": we do not
    ("", "A", False),
    ("The answer is (E)", "E", False),                   # not an option of a 4-choice question
    ("A patient presents with ...", "A", False),         # a word starting with A is not a choice
    ("(C)", "C", True),
    ("The answer is (A). Wait, actually the answer is (D).", "D", True),
]


@pytest.mark.parametrize("text,gold,ok", CHOICE_CASES)
def test_choice_scoring(text, gold, ok):
    assert score_choice(text, gold)[1] is ok


def test_unparseable_choice_is_none():
    assert extract_choice("Hmm, hard to say.") is None


@pytest.mark.parametrize("pred,gold,em,f1", [
    ("The Eiffel Tower", "eiffel tower", 1.0, 1.0),
    ("yes", "no", 0.0, 0.0),
    ("Paris, France", "Paris", 0.0, 2 / 3),
])
def test_qa_em_and_f1(pred, gold, em, f1):
    assert qa_scores(pred, gold) == pytest.approx((em, f1))


# ---- code scoring (sandbox.run_tests; its attack suite is tests/test_sandbox.py) -----------------------------

needs_sandbox = pytest.mark.skipif(not sandbox.available()[0], reason=sandbox.available()[1])


@needs_sandbox
def test_score_of_a_looping_code_answer_is_a_failed_sample():
    item = evaluate.load_benchmark("humaneval")[0]
    t0 = time.time()
    pred, ok, extra = evaluate.score(item, "```python\nwhile True: pass\n```", timeout=2)
    assert not ok and extra["timed_out"] and time.time() - t0 < 5


# ---- benchmarks ---------------------------------------------------------------------------------------------

def _canonical(it):
    return {"math": f"Thus \\boxed{{{it['gold']}}}.", "choice": f"The answer is ({it['gold']}).",
            "qa": f"\\boxed{{{it['gold']}}}", "code": f"```python\n{it['gold']}\n```"}[it["kind"]]


@pytest.mark.parametrize("name", evaluate.BENCHMARKS)
def test_every_benchmark_loads_and_scores_canonical_answers(name):
    if name in USER_PATHS:  # not shipped: read from the file the environment variable names
        flag, env = USER_PATHS[name]
        if not os.path.isfile(os.environ.get(env, "")):
            pytest.skip(f"{name} is not shipped: set {env}=FILE (what {flag} takes) to test it")
    if name in ("humaneval", "mbpp") and not sandbox.available()[0]:
        pytest.skip(sandbox.available()[1])
    items = evaluate.load_benchmark(name)
    assert len(items) >= 30
    for it in items[:3]:
        assert evaluate.score(it, _canonical(it))[1], it["id"]
        assert not evaluate.score(it, "I do not know.")[1]


@needs_sandbox
@pytest.mark.parametrize("name,n", [("humaneval", 164), ("mbpp", 500)])
def test_all_canonical_code_solutions_pass_in_the_sandbox(name, n):
    items = evaluate.load_benchmark(name)
    assert len(items) == n
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda it: evaluate.score(it, _canonical(it), timeout=20)[1], items))
    failed = [it["id"] for it, ok in zip(items, results) if not ok]
    assert not failed, failed

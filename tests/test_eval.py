"""Every benchmark's loader + scorer on canonical answers (the scorer: test_scoring.py; the sandbox: test_sandbox.py)."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import evaluate
from benchmarks import USER_PATHS
from helpers import canonical

# ---- code scoring (sandbox.run_tests; its attack suite is tests/test_sandbox.py) -----------------------------

@pytest.mark.sandbox
def test_score_of_a_looping_code_answer_is_a_failed_sample():
    item = evaluate.load_benchmark("humaneval")[0]
    t0 = time.time()
    pred, ok, extra = evaluate.score(item, "```python\nwhile True: pass\n```", timeout=2)
    assert not ok and extra["timed_out"] and time.time() - t0 < 9  # its 2 s, not the default 10 s


# ---- benchmarks ---------------------------------------------------------------------------------------------

CODE = ("humaneval", "humanevalplus", "mbpp", "mbppplus", "livecodebench")  # scored by running their tests


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.sandbox) if n in CODE else n
                                  for n in evaluate.BENCHMARKS])
def test_every_benchmark_loads_and_scores_canonical_answers(name):
    if name in USER_PATHS:  # not shipped: read from the file the environment variable names
        flag, env = USER_PATHS[name]
        if not os.path.isfile(os.environ.get(env, "")):
            pytest.skip(f"{name} is not shipped: set {env}=FILE (what {flag} takes) to test it")
    items = evaluate.load_benchmark(name)
    assert len(items) >= 30
    for it in items[:3]:
        assert evaluate.score(it, canonical(it))[1], it["id"]
        assert not evaluate.score(it, "I do not know.")[1]


@pytest.mark.sandbox
@pytest.mark.parametrize("name,n", [("humaneval", 164), ("mbpp", 500)])
def test_all_canonical_code_solutions_pass_in_the_sandbox(name, n):
    items = evaluate.load_benchmark(name)
    assert len(items) == n
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda it: evaluate.score(it, canonical(it), timeout=20)[1], items))
    failed = [it["id"] for it, ok in zip(items, results) if not ok]
    assert not failed, failed

"""The sandbox, and every benchmark's loader + scorer on canonical answers (the scorer itself: test_scoring.py)."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import evaluate
from sandbox import run_python

# ---- sandbox ------------------------------------------------------------------------------------------------

BAD = {
    "infinite loop": "while True:\n    pass\n",
    "fork bomb": "import os\nwhile True:\n    os.fork()\n",
    "10 GB allocation": "x = bytearray(10 * 2**30)\nprint(len(x))\n",
    "network": "import socket\nsocket.create_connection(('93.184.216.34', 80), timeout=2)\nprint('connected')\n",
    "loopback": "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 22))\n",
    "write outside": "open('/tmp/recursivemas_sandbox_escape.txt', 'w').write('x')\n",
    "write parent": "open('../recursivemas_escape.txt', 'w').write('x')\n",
    "subprocess": "import subprocess\nsubprocess.run(['true'])\n",
}


@pytest.mark.parametrize("name", list(BAD))
def test_sandbox_contains_bad_code(name):
    if os.path.exists("/tmp/recursivemas_sandbox_escape.txt"):
        os.remove("/tmp/recursivemas_sandbox_escape.txt")
    t0 = time.time()
    r = run_python(BAD[name], timeout=3)
    assert not r.ok
    assert time.time() - t0 < 3 + 2  # ends within the time limit (plus process start-up)
    assert "connected" not in r.stdout
    assert not os.path.exists("/tmp/recursivemas_sandbox_escape.txt")
    assert run_python("print(6 * 7)").stdout == "42\n"  # and the next sample runs normally


def test_sandbox_caps_output_and_passes_correct_code():
    r = run_python("print('x' * 10**6)", max_output=1000)
    assert len(r.stdout) == 1000
    ok = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n")
    assert ok.ok and ok.returncode == 0


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
    if name == "gpqa_diamond" and not os.path.exists(evaluate.GPQA_DEFAULT):
        pytest.skip("GPQA-Diamond is read from ../shared/data or --gpqa-path; not present here")
    items = evaluate.load_benchmark(name)
    assert len(items) >= 30
    for it in items[:3]:
        assert evaluate.score(it, _canonical(it))[1], it["id"]
        assert not evaluate.score(it, "I do not know.")[1]


@pytest.mark.parametrize("name,n", [("humaneval", 164), ("mbpp", 500)])
def test_all_canonical_code_solutions_pass_in_the_sandbox(name, n):
    items = evaluate.load_benchmark(name)
    assert len(items) == n
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda it: evaluate.score(it, _canonical(it), timeout=20)[1], items))
    failed = [it["id"] for it, ok in zip(items, results) if not ok]
    assert not failed, failed

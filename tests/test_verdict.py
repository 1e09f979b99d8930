"""Code scoring that cannot be gamed (verdict.py, planner.py, sandbox.run_tests): right answers pass and wrong ones
fail on every code benchmark, with the audit hook on and off, whatever the wrong answer does to its own process
(exiting early, reading its memory for a token, always-equal objects, patched helpers, forged records); asserts are
split so the expected values stay here, and the fallback asserts hold too."""
import json

import pytest

import benchmarks
from planner import plan_tests
from sandbox import run_python, run_tests
from conftest import HOOK

pytestmark = pytest.mark.sandbox  # skipped with the reason where bubblewrap cannot start (conftest.py)


# ---- code scoring that cannot be gamed ----------------------------------------------------------------------

GAMES = {
    "sys.exit": "import sys\nsys.exit(0)",
    "os._exit": "import os\nos._exit(0)",
    "atexit": "import atexit, os\natexit.register(os._exit, 0)",
    "SystemExit": "raise SystemExit(0)",
    "main guard": "if __name__ == '__main__':\n    import sys\n    sys.exit()",
    "excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)",
    "builtins": "import builtins\nbuiltins.AssertionError = type('E', (BaseException,), {})\nbuiltins.len = lambda x: 0",
    "echo stdin": "import sys, os\nprint(sys.stdin.read())\nsys.stdout.flush()\nos._exit(0)",
    "echo cmdline": "import os\nprint(open('/proc/self/cmdline').read())\nos._exit(0)",
    "frames": ("import sys, os\nfor v in sys._getframe(1).f_locals.values():\n    if type(v) is bytes: print(v.decode())\n"
               "sys.stdout.flush()\nos._exit(0)"),
}


@HOOK
@pytest.mark.parametrize("bench", ["humaneval", "mbpp"])
@pytest.mark.parametrize("game", list(GAMES))
def test_scoring_cannot_be_gamed(game, bench, hook):
    """A wrong answer that ends its own process or patches what the tests use (right answers pass: below)."""
    item, right, wrong, fn = _code_items()[bench]
    assert not run_tests(wrong + "\n" + GAMES[game] + "\n", item["tests"], timeout=5, hook=hook).passed


# ---- the verdict is decided outside the code under test ----------------------------------------------------
# Each attack below is appended to a wrong answer and scored through benchmarks.score() on a real item of each code
# benchmark (LiveCodeBench, not shipped: an item in its published format, stdin and functional), hook on and off.

def _lcb_items():
    stdin_t = [{"input": "3 4\n", "output": "7\n", "testtype": "stdin"},
               {"input": "10 -2\n", "output": "8\n", "testtype": "stdin"}]
    call_t = [{"input": "[1, 2, 3]\n2", "output": "[2, 4, 6]", "testtype": "functional"},
              {"input": "[5]\n3", "output": "[15]", "testtype": "functional"}]
    a = dict(id="lcb-stdin", kind="lcb", tests=stdin_t, func_name=None)
    b = dict(id="lcb-call", kind="lcb", tests=call_t, func_name="scale")
    return {"lcb-stdin": (a, "x, y = map(int, input().split())\nprint(x + y)\n", "print(0)\n", None),
            "lcb-call": (b, "class Solution:\n    def scale(self, xs, k):\n        return [x * k for x in xs]\n",
                         "class Solution:\n    def scale(self, xs, k):\n        return xs\n", "Solution.scale")}


_ITEMS = {}


def _code_items():
    """bench -> (item, right answer, wrong answer, the name the wrong answer's function is reached by)."""
    if not _ITEMS:
        pick = lambda name, i: next(x for x in benchmarks.load_benchmark(name) if x["id"] == i)
        he, hp = pick("humaneval", "HumanEval/2"), pick("humanevalplus", "HumanEval/2")
        wrong_he = "def truncate_number(number):\n    return 0.25\n"
        mb, mp = pick("mbpp", 11), pick("mbppplus", 2)
        _ITEMS.update({
            "humaneval": (he, he["prompt"] + he["gold"], wrong_he, "truncate_number"),
            "humanevalplus": (hp, hp["prompt"] + hp["gold"], wrong_he, "truncate_number"),
            "mbpp": (mb, mb["gold"], "def remove_Occ(s, ch):\n    return s\n", "remove_Occ"),
            "mbppplus": (mp, mp["gold"], "def similar_elements(a, b):\n    return (1,)\n", "similar_elements"),
            **_lcb_items()})
    return _ITEMS


CODE_BENCHES = ["humaneval", "humanevalplus", "mbpp", "mbppplus", "lcb-stdin", "lcb-call"]

# what a stolen secret is used for: printed between newlines (the old pass token's form) and forged as records on
# every descriptor, then an exit with status 0
_FORGE = (
    "def _forge(found):\n"
    "    import os\n"
    "    for tok in list(found)[:100]:\n"
    "        t = tok.decode()\n"
    "        forged = ''.join('{\"i\": %d, \"ok\": \"%s\"}\\n' % (k, t) for k in range(20))\n"
    "        blob = ('\\n' + t + '\\n' + forged).encode()\n"
    "        for fd in range(1, 10):\n"
    "            try:\n"
    "                os.write(fd, blob)\n"
    "            except OSError:\n"
    "                pass\n"
    "    os._exit(0)\n")
VERDICT_ATTACKS = {
    # the process's own memory through a path without the word "proc" (/dev/fd -> /proc/self/fd)
    "memory via /dev/fd": _FORGE + (
        "import re\n_found = set()\n"
        "try:\n"
        "    _mem = open('/dev/fd/../mem', 'rb', 0)\n"
        "    for _l in open('/dev/fd/../maps').read().splitlines():\n"
        "        _a, _b = (int(x, 16) for x in _l.split()[0].split('-'))\n"
        "        if 'r' in _l.split()[1] and _b - _a < 1 << 28:\n"
        "            try:\n"
        "                _mem.seek(_a)\n"
        "                _found |= set(re.findall(rb'[0-9a-f]{32}', _mem.read(_b - _a)))\n"
        "            except (OSError, ValueError, OverflowError):\n"
        "                pass\n"
        "except OSError:\n"
        "    pass\n"
        "_forge(_found)\n"),
    # raw ctypes, no /proc at all: libc's write() from every page around the interpreter's objects into a pipe
    # (EFAULT, not a crash, where nothing is mapped)
    "memory via ctypes": _FORGE + (
        "import ctypes, os, re, sys\n_found = set()\n"
        "_libc = ctypes.CDLL(None)\n"
        "_libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]\n"
        "_r, _w = os.pipe()\n"
        "for _base in {id(sys.modules) & ~4095, id(os) & ~4095, id(re) & ~4095}:\n"
        "    for _addr in range(max(4096, _base - (64 << 20)), _base + (64 << 20), 4096):\n"
        "        if _libc.write(_w, _addr, 4096) == 4096:\n"
        "            _found |= set(re.findall(rb'[0-9a-f]{32}', os.read(_r, 4096)))\n"
        "_forge(_found)\n"),
    "always-equal object": (
        "class _E:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    __hash__ = lambda s: 0\n"
        "    __bool__ = lambda s: True\n    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n"
        "    __sub__ = __rsub__ = __abs__ = __mod__ = lambda s, *o: s\n"
        "{fn} = lambda *a, **k: _E()\nprint(_E())\n"),
    "always-equal str subclass": (
        "class _S(str):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    __hash__ = lambda s: 0\n"
        "{fn} = lambda *a, **k: _S('x')\n"),
    "patched math.isclose": (
        "import math, builtins\nmath.isclose = lambda *a, **k: True\nmath.fabs = lambda x: 0.0\n"
        "builtins.abs = lambda x: 0.0\nbuiltins.round = lambda *a: 0\n"),
    "patched sys.exit": "import sys\nsys.exit = lambda *a: None\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "exit inside the call": "{fn} = lambda *a, **k: __import__('os')._exit(0)\n",
    "forged records": ("import os\nfor _fd in range(1, 10):\n    try:\n"
                       "        os.write(_fd, ''.join('{{\"i\": %d, \"v\": true}}\\n' % k\n"
                       "                              for k in range(2000)).encode())\n"
                       "    except OSError:\n        pass\nos._exit(0)\n"),
}


def _with(code, attack, fn):
    """A wrong answer with an attack appended; `fn`: the name its function is reached by (a stdin program has none:
    the attack's replacement is then bound to an unused name, and what it prints is the answer)."""
    return code + "\n" + VERDICT_ATTACKS[attack].replace("{fn}", fn or "_unused").replace("{{", "{").replace("}}", "}")


@HOOK
@pytest.mark.parametrize("bench", CODE_BENCHES)
def test_right_answers_pass_and_wrong_ones_fail_with_the_hook_on_and_off(bench, hook):
    item, right, wrong, fn = _code_items()[bench]
    assert benchmarks.score(item, f"```python\n{right}```", timeout=10, hook=hook)[1]
    pred, ok, extra = benchmarks.score(item, f"```python\n{wrong}```", timeout=10, hook=hook)
    assert extra["executed"] and not ok


@HOOK
@pytest.mark.parametrize("bench", CODE_BENCHES)
@pytest.mark.parametrize("attack", list(VERDICT_ATTACKS))
def test_a_wrong_answer_cannot_pass_by_attacking_the_verdict(attack, bench, hook):
    item, right, wrong, fn = _code_items()[bench]
    pred, ok, extra = benchmarks.score(item, f"```python\n{_with(wrong, attack, fn)}```", timeout=10, hook=hook)
    assert extra["executed"] and not ok, extra


@pytest.mark.parametrize("attack", ["memory via /dev/fd", "memory via ctypes"])
def test_the_memory_attacks_do_read_the_process_memory(attack):
    """With the hook off, each memory route does find a secret of the process (one made at run time, in no source),
    so the verdict tests above run attacks that work."""
    code = "import os\n_mine = os.urandom(16).hex().encode()\n" + VERDICT_ATTACKS[attack].replace(
        "_forge(_found)", "print('FOUND' if _mine in _found else 'MISSED', len(_found))")
    r = run_python(code, timeout=30, hook=False)
    assert "FOUND" in r.stdout, (r.stdout, r.stderr[-500:])


# Assert forms that cannot be split run in the sandbox (the fallback): on plain-data copies of what the solution
# returned, with math, sys.exit and the builtins as they were before the program ran.
FALLBACK_TESTS = ("import math, random\nfor _ in range(3):\n    x = random.random()\n"
                  "    assert f(x) == 2 * x or math.isclose(f(x), 2 * x)\n")
FALLBACK_RIGHT = "def f(x):\n    return 2 * x\n"
FALLBACK_ATTACKS = {
    "always-equal object": ("class _E:\n    __eq__ = lambda s, o: True\n    __hash__ = lambda s: 0\n"
                            "def f(x):\n    return _E()\n"),
    "patched math.isclose": "import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0.0\n",
    "replaced math module": ("import sys, types\n_m = types.ModuleType('math')\n_m.isclose = lambda *a, **k: True\n"
                             "sys.modules['math'] = _m\ndef f(x):\n    return 0.0\n"),
    "patched builtins": "import builtins\nbuiltins.range = lambda *a: []\ndef f(x):\n    return 0.0\n",
}


@HOOK
@pytest.mark.parametrize("attack", [None] + list(FALLBACK_ATTACKS))
def test_fallback_asserts_hold_against_always_equal_objects_and_patched_helpers(attack, hook):
    plan = plan_tests(FALLBACK_TESTS)
    assert (plan.split, plan.fallback) == (0, 1)
    r = run_tests(FALLBACK_ATTACKS[attack] if attack else FALLBACK_RIGHT, plan, timeout=10, hook=hook)
    assert r.executed and r.passed is (attack is None), r.detail or r.stderr[-300:]


def test_splittable_asserts_are_split_and_the_expected_values_stay_here():
    """The sandbox gets the calls (inputs); the expected values are only in the parent's checks."""
    tests = ("import math\nassert f(1) == 2\nassert abs(f(2) - 4.0) < 1e-6\n"
             "assert math.isclose(f(3), 6, rel_tol=1e-9)\n"
             "assert set(f(4)) == set([8])\nfor x in range(5, 7):\n    assert f(x) == 2 * x\n")
    plan = plan_tests(tests, per_statement=True)
    assert (plan.split, plan.fallback) == (6, 0)
    sent = json.dumps(plan.steps)
    assert all(v not in sent for v in ("== 2", "4.0", "6, rel", "[8]", "2 * x"))
    mp = next(x for x in benchmarks.load_benchmark("mbppplus") if x["id"] == 2)
    results = mp["tests"].split("results = ", 1)[1].split("\n", 1)[0]
    assert mp["plan"].fallback == 0 and results[:40] not in json.dumps(mp["plan"].steps)


def test_split_counts_per_benchmark():
    """Every assert of MBPP is split; the fallbacks of the others are the items listed in docs/guide.md."""
    counts = {n: benchmarks.split_counts(n) for n in benchmarks.CODE_BENCHMARKS}
    for n, c in counts.items():
        print(f"{n}: {c['split']} split, {c['fallback']} fallback in {c['items_with_fallback']}/{c['items']} items",
              sorted(c["forms"]))
    assert {n: set(c["forms"]) for n, c in counts.items()} == FALLBACK_ITEMS
    assert {n: c["split"] for n, c in counts.items()} == SPLIT
    assert {n: c["fallback"] for n, c in counts.items()} == FALLBACK


# HumanEval/38, /50, /53: loops over random inputs; /151: an expected value the tests compute; HumanEval+ /14, /15,
# /83, /100, /130, /139 and MBPP+ 88, 255, 630: a reference function of the tests; HumanEval+ /32: a helper of the
# tests applied to the output
FALLBACK_ITEMS = {"humaneval": {"HumanEval/38", "HumanEval/50", "HumanEval/53", "HumanEval/151"},
                  "humanevalplus": {"HumanEval/14", "HumanEval/15", "HumanEval/32", "HumanEval/83", "HumanEval/100",
                                    "HumanEval/130", "HumanEval/139"},
                  "mbpp": set(), "mbppplus": {88, 255, 630}}
SPLIT = {"humaneval": 1233, "humanevalplus": 121592, "mbpp": 1500, "mbppplus": 40293}
FALLBACK = {"humaneval": 4, "humanevalplus": 2389, "mbpp": 0, "mbppplus": 341}

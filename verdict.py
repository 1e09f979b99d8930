"""
The verdict on a code answer, decided here, outside the code under test.

A Plan splits a benchmark's tests in two: the steps the sandbox runs (the program, then calls with the test inputs
only) and the checks this process makes on what those calls returned, so the expected values never enter the
sandbox. planner.py makes Plans from assert-style tests; lcb_plan makes one from LiveCodeBench's JSON test cases.
verdict() reads the records the sandbox sent back (one per step; values as tagged plain data, decoded here into
builtin types) and decides: every step must have reported, in order, and every check must hold under the
benchmark's own rule (equality, evalplus_match, lines_match, or the assert's own comparison, evaluated with the SAFE
names only). A fallback assert, one the planner could not split, holds when its step sent back the run's token.

    verdict(plan, records, token)      # -> (passed, why not); sandbox.run_tests calls it
"""
import builtins
import json
import math
from dataclasses import dataclass


@dataclass
class Plan:
    """Tests, split: `steps` run in the sandbox ([kind, source, name, new part]; kind exec | call | check), `checks`
    are decided here ([kind, *args]; kind ok | expr | evalplus | lines | json). A `call` step returns its value as
    data; `check` steps are the assert forms that could not be split (the fallback), run in the sandbox on
    plain-data copies."""
    steps: list
    checks: list
    parts: int
    split: int = 0       # asserts decided here
    fallback: int = 0    # asserts run in the sandbox
    fallback_forms: list = None


# ---- the comparisons: each benchmark's own rule, on plain data --------------------------------------------------

# What the parent may evaluate around a returned value: the benchmark's own comparison, on plain data only
SAFE = {n: getattr(builtins, n) for n in ("abs", "all", "any", "bool", "dict", "float", "frozenset", "int",
                                          "isinstance", "len", "list", "max", "min", "round", "set", "sorted", "str",
                                          "sum", "tuple", "zip", "enumerate", "reversed", "complex")}
SAFE["math"] = math


def _flat(x):
    return [z for y in x for z in _flat(y)] if isinstance(x, (list, tuple)) else [x]


def allclose(a, b, rtol=1e-05, atol=1e-08):
    """numpy.allclose's rule, |a - b| <= atol + rtol |b| elementwise, on nested lists and tuples."""
    a, b = _flat(a), _flat(b)
    return len(a) == len(b) and all(abs(x - y) <= atol + rtol * abs(y) for x, y in zip(a, b))


def evalplus_match(out, exp, atol, kind="exact"):
    """EvalPlus's `assertion(out, exp, atol)`: exact, or for floats (atol 0 -> 1e-6) allclose with rtol 1e-7; kind
    "set" compares set(out) with set(exp) so; kind "none" (a form that asserts nothing) holds."""
    if kind == "none":
        return True
    if kind == "set":
        out, exp = set(out), set(exp)
    exact = out == exp
    floats = isinstance(exp, float) or (isinstance(exp, (list, tuple)) and all(isinstance(i, float) for i in exp))
    if atol == 0 and floats:
        atol = 1e-6
    return bool(allclose(out, exp, rtol=1e-07, atol=atol)) if not exact and atol != 0 else bool(exact)


def lines_match(got, want):
    """LiveCodeBench's stdout rule: line by line, surrounding whitespace of the whole and of each line ignored."""
    norm = lambda s: [l.strip() for l in s.strip().splitlines()]
    return isinstance(got, str) and norm(got) == norm(want)


# ---- LiveCodeBench: its JSON test cases as a Plan ---------------------------------------------------------------

LCB_HEADER = "from typing import *\nimport bisect, collections, functools, heapq, itertools, math, re, string, sys\n"

LCB_HARNESS = r'''
import io, json, sys
def _stdin(inp):
    old, out = (sys.stdin, sys.stdout), io.StringIO()
    sys.stdin, sys.stdout = io.TextIOWrapper(io.BytesIO(inp.encode())), out
    try:
        exec(compile(CODE, "solution.py", "exec"), {"__name__": "__main__"})
    except SystemExit:
        pass
    finally:
        sys.stdin, sys.stdout = old
    return out.getvalue()
def _call(inp):
    ns = {"__name__": "solution"}
    exec(compile(CODE, "solution.py", "exec"), ns)
    fn = getattr(ns["Solution"](), FUNC) if "Solution" in ns else ns[FUNC]
    return fn(*[json.loads(line) for line in inp.split("\n") if line.strip()])
'''


def lcb_plan(code, tests, func_name):
    """A LiveCodeBench item's tests against `code`, as a Plan: a setup (the answer's source and two helpers)
    and then one part per test, each with its own time limit. The sandbox gets only the inputs and sends back what
    the answer printed (stdin tests) or returned (functional tests); the comparison is made here: the printed text
    line by line with surrounding whitespace ignored, the returned value as data (a tuple read as a list) equal to
    the JSON output."""
    steps = [["exec", f"CODE = {LCB_HEADER + code!r}\nFUNC = {func_name!r}\n{LCB_HARNESS}", None, True]]
    checks = []
    for t in tests:
        functional = t.get("testtype") == "functional"
        steps.append(["call", f"{'_call' if functional else '_stdin'}({t['input']!r})", None, True])
        v = {"_v": ("step", len(steps) - 1)}
        checks.append(["json", v, json.loads(t["output"])] if functional else ["lines", v, t["output"]])
    return Plan(steps, checks, len(steps), split=len(tests))


# ---- the verdict: the records read back, every check decided ----------------------------------------------------

def _decode(x):
    """A returned value as the harness tagged it (see harness.py's enc) -> the builtin value."""
    if isinstance(x, dict):
        (k, v), = x.items()
        if k == "l":
            return [_decode(y) for y in v]
        if k == "t":
            return tuple(_decode(y) for y in v)
        if k == "s":
            return {_decode(y) for y in v}
        if k == "f":
            return frozenset(_decode(y) for y in v)
        if k == "d":
            return {_decode(a): _decode(b) for a, b in v}
        if k == "h":
            return int(v, 16)
        if k == "c":
            return complex(float(v[0]), float(v[1]))
        if k == "b":
            return bytes.fromhex(v)
        raise ValueError(f"unknown tag {k!r}")
    if isinstance(x, list):
        raise ValueError("an untagged list")
    return x


def _bind(env, values):
    return {k: (values[v[1]] if v[0] == "step" else v[1]) for k, v in env.items()}


def _judge(check, values, token):
    """-> None when the check holds, else why not. `values`: step index -> returned data (plain builtins)."""
    kind = check[0]
    if kind == "ok":
        return None if values.get(check[1]) == ("ok", token) else "the fallback assert did not complete"
    if kind == "expr":
        scope = {"__builtins__": {}, **SAFE, **_bind(check[2], values)}  # globals: seen inside generator expressions
        held = eval(compile(check[1], "<check>", "eval"), scope)
        return None if held else f"{check[1][:120]} is false for {_bind(check[2], values)!r:.200}"
    if kind == "evalplus":
        got = _bind(check[1], values)["_v"]
        return None if evalplus_match(got, *check[2:]) else f"got {got!r:.100}, expected {check[2]!r:.100}"
    if kind == "lines":
        got = _bind(check[1], values)["_v"]
        return None if lines_match(got, check[2]) else f"printed {got!r:.100}, expected {check[2]!r:.100}"
    if kind == "json":
        got = _bind(check[1], values)["_v"]
        got = list(got) if isinstance(got, tuple) else got
        return None if got == check[2] else f"returned {got!r:.100}, expected {check[2]!r:.100}"
    raise ValueError(f"unknown check {kind!r}")


def verdict(plan, records, token):
    """-> (passed, why not). Every step must have sent exactly one record, in order; every check must hold."""
    values, lines = {}, records.split(b"\n")
    for line in lines[:-1] if not lines[-1] else lines:  # a last line without its newline is read, and refused
        try:
            r = json.loads(line)
            i = r["i"]
            if type(i) is not int or i != len(values) or set(r) - {"i", "v", "e", "ok"}:
                return False, "the records are out of order"
            if "e" in r:
                return False, f"test step {i + 1}: {str(r['e'])[:300]}"
            values[i] = _decode(r["v"]) if "v" in r else ("ok", r["ok"]) if "ok" in r else None
        except (ValueError, KeyError, TypeError, RecursionError, MemoryError, OverflowError) as e:
            return False, f"an unreadable record ({type(e).__name__})"
    if len(values) != len(plan.steps):
        return False, f"{len(values)} of {len(plan.steps)} test steps reported (the run ended early)"
    for c in plan.checks:
        try:
            why = _judge(c, values, token)
        except Exception as e:  # a comparison that raises on the returned data: a failed case
            why = f"the comparison raised {type(e).__name__}"
        if why:
            return False, why
    return True, ""

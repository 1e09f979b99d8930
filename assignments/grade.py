"""
Grade assignments: run the tests each assignment's ```grading block lists, in one pytest process, and print a
score per group and a total. A group scores its points only when every test in it passes (a test that is missing,
skipped or fails scores nothing). Needs no network and no GPU (CUDA is hidden from the tests).

    python assignments/grade.py 2                      # the reference repository itself: full marks
    python assignments/grade.py 2 --in ~/course/a2     # a student copy written by make.py
    python assignments/grade.py 1 2 3 4 5 6 --json     # several at once, one JSON object

Exit code: 0 when every graded assignment has full marks, 1 otherwise, 2 on bad input.
"""
import argparse
import json
import os
import re
import subprocess
import sys

from make import ROOT, CourseError, read_header

RESULT = re.compile(r"^(PASSED|FAILED|ERROR|XPASS|XFAIL) (\S+)")


def run_tests(folder, node_ids, timeout=600):
    """Run pytest on node_ids in folder -> ({node id as pytest reports it: outcome}, [files that failed to import],
    pytest's output)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--no-header", *node_ids]
    try:
        r = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {}, [], f"pytest ran past {timeout} s"
    outcomes, broken = {}, []
    for line in r.stdout.splitlines():
        m = RESULT.match(line)
        if m and "::" in m.group(2):
            outcomes[m.group(2)] = m.group(1)
        elif m and m.group(1) == "ERROR":
            broken.append(m.group(2))  # a test file that could not be collected (an import failed)
    return outcomes, broken, r.stdout + r.stderr


def score(header, outcomes):
    """[(group name, points, earned, [failed or missing node ids])] for one assignment."""
    rows = []
    for name, points, ids in header["groups"]:
        bad = []
        for nid in ids:
            got = [o for k, o in outcomes.items() if k == nid or k.startswith(nid + "[")]
            if not got or any(o != "PASSED" for o in got):
                bad.append(nid)
        rows.append((name, points, 0 if bad else points, bad))
    return rows


def grade(numbers, folder=ROOT, verbose=False):
    """{n: {title, groups: [{name, points, earned, failed}], earned, points, broken}} for assignments `numbers` in
    folder; `broken`: test files that did not even import."""
    headers = {n: read_header(n) for n in numbers}
    ids = list(dict.fromkeys(nid for h in headers.values() for _, _, g in h["groups"] for nid in g))
    outcomes, broken, log = run_tests(folder, ids)
    if verbose:
        print(log)
    result = {}
    for n, h in headers.items():
        groups = [dict(name=a, points=p, earned=e, failed=f) for a, p, e, f in score(h, outcomes)]
        result[n] = dict(title=h["title"], groups=groups, earned=sum(g["earned"] for g in groups),
                         points=sum(g["points"] for g in groups), broken=broken)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description="Grade course assignments by running their tests.")
    p.add_argument("n", nargs="+", help="assignment numbers (1-6)")
    p.add_argument("--in", dest="folder", default=ROOT, help="the copy to grade (default: this repository)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("-v", "--verbose", action="store_true", help="also print pytest's output")
    a = p.parse_args(argv)
    try:
        numbers = [int(x) if x.isdigit() else x for x in a.n]
        for n in numbers:
            read_header(n)
        if not os.path.isdir(a.folder) or not os.path.isdir(os.path.join(a.folder, "tests")):
            raise CourseError(f"--in '{a.folder}' is not a copy of the repository (no tests/ folder in it)")
    except CourseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = grade(numbers, os.path.abspath(a.folder), a.verbose)
    if a.json:
        print(json.dumps(result))
    else:
        for n, r in result.items():
            print(f"assignment {n}: {r['title']}")
            for g in r["groups"]:
                print(f"  {g['earned']:2d}/{g['points']:<2d} {g['name']}")
                for nid in g["failed"]:
                    print(f"        failed: {nid}")
            print(f"  {r['earned']:2d}/{r['points']:<2d} total")
            for path in r["broken"]:
                print(f"  (could not import {path}: run it with pytest to see why)")
    return 0 if all(r["earned"] == r["points"] for r in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

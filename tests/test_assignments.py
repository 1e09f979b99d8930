"""The course's graders can fail: the reference scores full marks, a blanked student copy scores 0 on every graded
group and still imports, and each planted wrong solution (assignments/planted/N.py) loses exactly the groups it
says it loses. Plus make.py's edits on the syntax tree (the scripts' one-line errors: test_core.py)."""
import ast
import filecmp
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COURSE = os.path.join(ROOT, "assignments")
sys.path.insert(0, COURSE)
import make  # noqa: E402  (assignments/make.py)

if not os.path.isdir(os.path.join(COURSE, "planted")):  # a student copy (make.py leaves the wrong solutions out)
    pytest.skip("a student copy: the course's own checks run in the reference repository", allow_module_level=True)
NUMBERS = sorted(int(os.path.basename(p)[:2]) for p in glob.glob(os.path.join(COURSE, "[0-9][0-9]-*.md")))


def _script(name, *args):
    return subprocess.run([sys.executable, os.path.join(COURSE, name), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def _grade(numbers, folder):
    r = _script("grade.py", *numbers, "--in", folder, "--json")
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return {int(k): v for k, v in json.loads(r.stdout).items()}


def test_there_are_six_assignments_each_with_a_planted_wrong_solution():
    assert NUMBERS == [1, 2, 3, 4, 5, 6]
    for n in NUMBERS:
        header = make.read_header(n)
        assert header["functions"] and sum(p for _, p, _ in header["groups"]) == 10
        assert make.planted_loses(os.path.join(COURSE, "planted", f"{n}.py")) <= {g for g, _, _ in header["groups"]}


def test_the_reference_scores_full_marks():
    result = _grade(NUMBERS, ROOT)
    assert sorted(result) == NUMBERS
    for n, r in result.items():
        assert r["broken"] == [] and r["points"] == 10, n
        assert [g["earned"] for g in r["groups"]] == [g["points"] for g in r["groups"]], (n, r["groups"])


# One copy per plan: assignment B blanked (or none) plus planted wrong solutions P, grading B and P in one pytest
# process (starting one costs more than the tests). Each pair is independent: B's functions are not used by P's
# tests, and P's wrong functions cannot rescue B's. Assignments 1 and 2 are used by nearly every test: alone.
PLANS = [(1, []), (2, []), (3, [1]), (4, [2]), (5, [4]), (6, [5]), (None, [3, 6])]


def test_every_assignment_is_blanked_once_and_planted_once():
    assert sorted(b for b, _ in PLANS if b) == NUMBERS and sorted(p for _, ps in PLANS for p in ps) == NUMBERS


def _make_plan(blanked, planted, out):
    """A copy with assignment `blanked`'s functions blanked (or none) and the planted solutions put in."""
    paths = [os.path.join(COURSE, "planted", f"{m}.py") for m in planted]
    if blanked:
        assert make.main([str(blanked), "--out", str(out)]) == 0
    else:
        make.make_copy(planted[0], str(out), planted=paths.pop(0))
    for path in paths:  # the rest, into the copy in place
        for qualname, text in make.read_planted(path):
            file, inner = make.split_name(qualname, str(out))
            source = make.replace(open(file).read(), inner, text, file)
            open(file, "w").write(source)


def _check_blanked(n, planted, out):
    """Only the blanked (and planted) functions' files differ; each blanked one keeps its signature and docstring
    and raises."""
    header = make.read_header(n)
    changed = {make.split_name(q)[0] for q in header["functions"]}
    changed |= {make.split_name(q)[0] for m in planted
                for q, _ in make.read_planted(os.path.join(COURSE, "planted", f"{m}.py"))}
    assert not os.path.exists(out / "assignments" / "planted")  # near-answers stay out of the student's copy
    for rel in make.copied_files():
        a, b = os.path.join(ROOT, rel), os.path.join(out, rel)
        if a not in changed:
            assert filecmp.cmp(a, b, shallow=False), rel  # every other file byte-identical
    for q in header["functions"]:
        path, inner = make.split_name(q)
        copy = open(os.path.join(out, os.path.relpath(path, ROOT))).read()
        compile(copy, path, "exec")
        node, ref = make.locate(copy, inner), make.locate(open(path).read(), inner)
        assert ast.get_docstring(node) == ast.get_docstring(ref) and ast.dump(node.args) == ast.dump(ref.args)
        body = node.body[1:] if ast.get_docstring(node) else node.body
        assert len(body) == 1 and f"assignment {n}: write {q}" in ast.unparse(body[0])


@pytest.mark.parametrize("blanked,planted", PLANS,
                         ids=[f"blank{b or '-'}+planted{''.join(map(str, p)) or '-'}" for b, p in PLANS])
def test_blanked_copies_score_zero_and_planted_wrong_solutions_lose_their_groups(blanked, planted, tmp_path):
    out = tmp_path / "copy"
    _make_plan(blanked, planted, out)
    if blanked:
        _check_blanked(blanked, planted, out)
    result = _grade(([blanked] if blanked else []) + planted, str(out))
    if blanked:
        r = result[blanked]
        assert r["broken"] == []  # it still imports: every graded test ran and failed on its own
        assert [g["earned"] for g in r["groups"]] == [0] * len(r["groups"]), r["groups"]
    for m in planted:
        lost = {g["name"] for g in result[m]["groups"] if g["earned"] < g["points"]}
        assert lost and lost == make.planted_loses(os.path.join(COURSE, "planted", f"{m}.py")), result[m]["groups"]


def test_a_group_scores_only_when_every_listed_test_ran_and_passed():
    import grade
    header = dict(groups=[("a", 3, ["t.py::x"]), ("b", 2, ["t.py::y", "t.py::z"]), ("c", 5, ["t.py::gone"])])
    outcomes = {"t.py::x[p1]": "PASSED", "t.py::x[p2]": "PASSED", "t.py::y": "PASSED", "t.py::z": "FAILED",
                "t.py::gone_too": "PASSED"}  # 'gone' never ran: a prefix without '[' does not count
    assert [(name, earned) for name, _, earned, _ in grade.score(header, outcomes)] == [("a", 3), ("b", 0), ("c", 0)]


SOURCE = '''import os


class A:
    @staticmethod
    def f(x):
        """Doc."""
        y = x + 1  # a comment
        return y

    def g(self):
        return 2


def h():
    return 3
'''


def test_blank_and_replace_touch_only_the_body():
    out = make.blank(SOURCE, "A.f", "assignment 9: write it")
    assert out == SOURCE.replace('        y = x + 1  # a comment\n        return y\n',
                                 "        raise NotImplementedError('assignment 9: write it')\n")
    assert make.blank(SOURCE, "h", "m").endswith("def h():\n    raise NotImplementedError('m')\n")
    swapped = make.replace(SOURCE, "A.g", "def g(self):\n    return 5\n")
    assert swapped == SOURCE.replace("        return 2\n", "        return 5\n")
    with pytest.raises(make.CourseError, match="A.nope"):
        make.blank(SOURCE, "A.nope", "m")

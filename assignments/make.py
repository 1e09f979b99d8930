"""
Write a student copy of the repository for one assignment: every file as it is, except that the assignment's
functions keep only their signature and docstring; their bodies become `raise NotImplementedError(...)`.

    python assignments/make.py 2 --out ~/course/a2      # then: python assignments/grade.py 2 --in ~/course/a2

Which functions, and which tests grade them, is read from the fenced ```grading block at the top of the
assignment's file (assignments/02-*.md). Functions are found on the syntax tree by qualified name
(`links.RecursiveLink.forward` = class RecursiveLink's method forward in links.py); only the lines of the body are
replaced, so the rest of each file stays byte-identical and every module still imports.
"""
import argparse
import ast
import glob
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SKIP = {".git", ".venv", "runs", "__pycache__", ".pytest_cache"}  # never copied


class CourseError(Exception):
    """A mistake the user can fix; the scripts print its one line and exit 2."""


# ----------------------------------------------------------------------------------------------------------------
# The header of an assignment file

def assignment_file(n, root=ROOT):
    found = sorted(glob.glob(os.path.join(root, "assignments", f"{int(n):02d}-*.md"))) if str(n).isdigit() else []
    if not found:
        have = sorted(int(os.path.basename(p)[:2]) for p in glob.glob(os.path.join(root, "assignments", "[0-9][0-9]-*.md")))
        raise CourseError(f"unknown assignment '{n}'; use one of {', '.join(map(str, have))}")
    return found[0]


def read_header(n, root=ROOT):
    """The ```grading block of assignment n -> {title, functions: [qualname], groups: [(name, points, [node id])]}.

        functions:
          links.RecursiveLink.forward
        group 4 points: the five variants' equations
          tests/test_course.py::test_a1_variants_follow_their_equations
    """
    path = assignment_file(n, root)
    text = open(path).read()
    m = re.search(r"^```grading\n(.*?)^```", text, re.S | re.M)
    if not m:
        raise CourseError(f"{path} has no ```grading block")
    title = text.splitlines()[0].lstrip("# ").strip()
    functions, groups, current = [], [], None
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            g = re.fullmatch(r"group (\d+) points?: (.+)", line.strip())
            if line.strip() == "functions:":
                current = functions
            elif g:
                groups.append((g.group(2), int(g.group(1)), []))
                current = groups[-1][2]
            else:
                raise CourseError(f"{path}: cannot read the grading line '{line}'")
        elif current is None:
            raise CourseError(f"{path}: '{line.strip()}' comes before 'functions:' or a 'group'")
        else:
            current.append(line.strip())
    if not functions or not groups or not all(g[2] for g in groups):
        raise CourseError(f"{path}: the grading block needs functions and groups, each with at least one line")
    return dict(title=title, functions=functions, groups=groups)


# ----------------------------------------------------------------------------------------------------------------
# Functions on the syntax tree

def locate(source, qualname, path="?"):
    """The def node of `Class.method` or `function` (module part already stripped) in source."""
    nodes, node = ast.parse(source).body, None
    for part in qualname.split("."):
        node = next((x for x in nodes if isinstance(x, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and x.name == part), None)
        if node is None:
            raise CourseError(f"{path} has no '{qualname}' (looked for '{part}'); update the assignment's header")
        nodes = node.body
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise CourseError(f"'{qualname}' in {path} is a class, not a function")
    return node


def split_name(qualname, root=ROOT):
    """'links.RecursiveLink.forward' -> (path of links.py, 'RecursiveLink.forward')."""
    module, _, rest = qualname.partition(".")
    path = os.path.join(root, module + ".py")
    if not rest or not os.path.exists(path):
        raise CourseError(f"'{qualname}' does not name a function in a file of the repository (no {module}.py)")
    return path, rest


def blank(source, qualname, message, path="?"):
    """Replace the body of `qualname` (its docstring kept) by one `raise NotImplementedError(message)`."""
    node = locate(source, qualname, path)
    body = node.body
    doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)
    code = body[1:] if doc else body
    if not code or code[0].lineno == node.lineno:
        raise CourseError(f"'{qualname}' in {path} has no body on lines of its own to blank")
    lines = source.splitlines(keepends=True)
    first, last = code[0].lineno - 1, code[-1].end_lineno  # 0-based start, exclusive end
    indent = " " * code[0].col_offset
    return "".join(lines[:first] + [f"{indent}raise NotImplementedError({message!r})\n"] + lines[last:])


def replace(source, qualname, new_def, path="?"):
    """Replace the whole def of `qualname` (decorators included) by `new_def`, re-indented to its place."""
    node = locate(source, qualname, path)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    lines = source.splitlines(keepends=True)
    indent = " " * node.col_offset
    new = [indent + l if l.strip() else l for l in _dedent(new_def).splitlines(keepends=True)]
    return "".join(lines[:first] + new + lines[node.end_lineno:])


def _dedent(text):
    import textwrap
    return textwrap.dedent(text).strip("\n") + "\n"


def read_planted(path):
    """A planted wrong solution: '# replaces: QUALNAME' lines, each followed by the def that takes its place."""
    parts = re.split(r"^# replaces: *(\S+) *\n", open(path).read(), flags=re.M)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]


def planted_loses(path):
    """The groups a planted wrong solution must lose: its '# loses: name | name' line."""
    m = re.search(r"^# loses: *(.+)$", open(path).read(), re.M)
    return {x.strip() for x in m.group(1).split("|")} if m else set()


# ----------------------------------------------------------------------------------------------------------------
# The copy

def repo_files(root=ROOT):
    """Relative paths of the repository's files: git's tracked and not-ignored ones, else a walk of the tree."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f and os.path.isfile(os.path.join(root, f))]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. a student copy)
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in SKIP]  # prune in place: os.walk does not descend into them
            files += [os.path.relpath(os.path.join(folder, f), root) for f in names]
    return sorted(f for f in files if not set(f.split(os.sep)) & SKIP)


def copied_files(root=ROOT):
    """What a student copy holds: the repository's files but the planted wrong solutions (near-answers)."""
    return [f for f in repo_files(root) if not f.startswith(os.path.join("assignments", "planted") + os.sep)]


def make_copy(n, out, root=ROOT, planted=None):
    """Copy the repository to `out` (which must be empty or absent) and blank assignment n's functions; with
    `planted` (a file as read_planted reads it), keep the reference and put those wrong functions in instead.
    Returns the changed files."""
    header = read_header(n, root)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise CourseError(f"--out '{out}' is not an empty folder; pick a new one or empty it")
    edits = {}  # path -> new source
    for qualname in [] if planted else header["functions"]:
        path, inner = split_name(qualname, root)
        src = edits.get(path) or open(path).read()
        note = f"assignment {int(n)}: write {qualname} (see {os.path.relpath(assignment_file(n, root), root)})"
        edits[path] = blank(src, inner, note, path)
    for qualname, text in read_planted(planted) if planted else []:
        path, inner = split_name(qualname, root)
        edits[path] = replace(edits.get(path) or open(path).read(), inner, text, path)
    os.makedirs(out, exist_ok=True)
    for rel in copied_files(root):
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        src = os.path.join(root, rel)
        if src in edits:
            with open(dst, "w") as f:
                f.write(edits[src])
            shutil.copymode(src, dst)
        else:
            shutil.copy2(src, dst)
    return sorted(os.path.relpath(p, root) for p in edits)


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a student copy of the repository for one assignment.")
    p.add_argument("n", help="assignment number (1-6)")
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.add_argument("--planted", default=None, help=argparse.SUPPRESS)  # tests: a wrong solution instead of blanks
    a = p.parse_args(argv)
    try:
        changed = make_copy(a.n, a.out, planted=a.planted)
        header = read_header(a.n)
    except CourseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: {header['title']}")
    for q in header["functions"]:
        print(f"  to write: {q}")
    print(f"  changed files: {', '.join(changed)}\n  grade it with: python assignments/grade.py {int(a.n)} --in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

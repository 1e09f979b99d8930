"""The repository's shape, read from its files: imports point up the README's file table, no script imports a script,
the reference never imports the fast path, no file over 400 lines, System at most 100 lines, each shared option
defined once."""
import ast
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES, MAX_SYSTEM = 400, 100
# Options two scripts define with different meanings (so not one shared option): what each script means by it.
TWO_MEANINGS = {"--method": "train_single.py: what is trained (lora, full); evaluate.py: what answers",
                "--batch-size": "the trainers: rows per optimizer step; evaluate.py: questions per forward batch"}


def tracked(pattern="*.py"):
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", pattern], cwd=ROOT,
                         capture_output=True, text=True).stdout.split()
    return out or [f for f in os.listdir(ROOT) if f.endswith(".py")]  # a copy without git: the top level


def source(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def modules():
    """The top-level modules and scripts: {name: path}."""
    return {p[:-3]: p for p in tracked() if "/" not in p}


def local_imports(path, names):
    """The repository modules `path` imports anywhere in it (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(source(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(names)


def is_script(path):
    return 'if __name__ == "__main__":' in source(path)


def table_order():
    """The files of the README's file table, in its order: [[file, ...] per row]."""
    text = source("README.md").split("## Files", 1)[1].split("\n## ", 1)[0]
    rows = [re.findall(r"`(\w+)\.py`", line.split(" | ")[0]) for line in text.splitlines() if line.startswith("| `")]
    return [r for r in rows if r]


def test_every_module_is_in_the_file_table_once():
    listed = [m for row in table_order() for m in row]
    assert sorted(listed) == sorted(set(listed)), "a file is listed twice"
    assert set(listed) == set(modules()), set(listed) ^ set(modules())


def test_imports_point_up_the_file_table():
    """A file imports only files listed before it (a row lists its files in import order), so the table is an order
    in which to read them, and there is no cycle."""
    order = [m for row in table_order() for m in row]
    wrong = [(m, dep) for m in order for dep in local_imports(modules()[m], modules())
             if order.index(dep) >= order.index(m)]
    assert not wrong, f"imports that point down the README's file table (file, what it imports): {wrong}"


def test_no_script_imports_another_script():
    names = modules()
    scripts = {m for m, p in names.items() if is_script(p)}
    assert {"agents", "evaluate", "bench", "train_inner", "train_outer", "train_single"} <= scripts
    wrong = [(m, dep) for m, p in names.items() for dep in local_imports(p, names) if dep in scripts and dep != m]
    assert not wrong, f"scripts imported (file, script): {wrong}"


def test_the_reference_never_imports_the_fast_path():
    assert local_imports("model.py", modules()) == set()  # the frozen LM stands on torch and transformers alone


@pytest.mark.parametrize("path", tracked())
def test_no_file_is_over_400_lines(path):
    n = source(path).count("\n")
    assert n <= MAX_LINES, f"{path} has {n} lines; split it by concept"


def test_system_is_the_loop_and_little_else():
    tree = ast.parse(source("recursion.py"))
    system = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "System")
    assert system.end_lineno - system.lineno + 1 <= MAX_SYSTEM


def test_each_shared_option_is_defined_once():
    where = {}
    for name, path in modules().items():
        for flag in re.findall(r'add_argument\(\s*"(--[\w-]+)"', source(path)):
            where.setdefault(flag, []).append(path)
    twice = {f: ps for f, ps in where.items() if len(ps) > 1 and f not in TWO_MEANINGS}
    assert not twice, f"options defined in more than one file (define them once in cli.py): {twice}"
    assert where["--agents"] == ["cli.py"]
    assert all(len(where[f]) == 2 for f in TWO_MEANINGS)  # an exception that is no longer needed goes

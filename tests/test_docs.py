"""Every flag, repository file and `module.name` the documentation names exists.

Read: README.md, docs/*.md, assignments/README.md. Checked:

- flags of commands: each command in a fenced code block (and each command written inline in backticks) that runs
  one of our scripts (`python SCRIPT.py ...`, `.venv/bin/python SCRIPT.py ...`, `torchrun ... SCRIPT.py ...`,
  `bash scripts/X.sh ...`, or just `SCRIPT.py --flag`) names only flags that script has: its `--help` (from
  `main(["--help"])`, in-process) for a top-level script with a `main`, else the script's own text. `python -m
  pytest`'s flags are pytest's and programs that are not ours (`hf`, `pip`, `bwrap`, ...) are not checked;
- flags in prose: a backtick span that starts with `--` names flags that at least one of our scripts' --help lists;
- files: a path in backticks, in a command, or written out in prose that ends with .py, .md, .sh, .jsonl, .ini,
  .txt or .cff, or starts with docs/, scripts/, tests/, data/ or assignments/, exists (from the repository root, or
  from the document's folder). Not checked: run outputs (`runs/...`), absolute and home paths, placeholders
  (`<...>`, `N`, `OUT/`, `*`, `...`), and the files of the authors' release (`FOREIGN_FILES`);
- names: `module.name` in backticks, where module.py is a top-level module of this repository, is an attribute of
  that module (`links.RecursiveLink`, `gradprobe.grad_probe`).

Each failure names the document, the line, and what is missing. Offline, no model is loaded.
"""
import glob
import importlib
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(["README.md", "assignments/README.md",
               *(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))])

EXTENSIONS = (".py", ".md", ".sh", ".jsonl", ".ini", ".txt", ".cff")
PREFIXES = ("docs/", "scripts/", "tests/", "data/", "assignments/")
PLACEHOLDERS = {"N", "OUT", "NAME", "FILE", "PID"}  # a path component that stands for a value
# Named in the docs, but not this repository's: the authors' release (method.md §8, §9) and bubblewrap (guide.md).
FOREIGN_FILES = {"prompts.py", "run.py", "inference_mas.py", "inference_utils/inference_mas.py"}
FOREIGN_FLAGS = {"--lcb_timeout_s", "--mbppplus_timeout_s",  # the release's run.py
                 "--seccomp", "--tmpfs", "--size", "--disable-userns"}  # bubblewrap's

PYTHON = re.compile(r"^(?:\S*/)?python(?:\d+(?:\.\d+)?)?$|^\$py$")
FLAG = re.compile(r"^\[?(--[A-Za-z][\w-]*)")
PROSE_PATH = re.compile(r"(?<![\w./~<>$-])((?:[\w.-]+/)*[\w.-]*\w\.(?:py|md|sh|jsonl|ini|txt|cff)"
                        r"|(?:docs|scripts|tests|data|assignments)/[\w./-]*\w/?)(?![\w/])")
MODULE_NAME = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*)\.([A-Za-z_]\w*)")


# ---- reading a document -----------------------------------------------------------------------------------------

def read_doc(text):
    """-> (code, spans, prose): code = [(line, logical command line)] of the fenced blocks (continuation lines
    joined); spans = [(line, content)] of the inline code spans outside them; prose = [(line, text)] of the text
    outside both."""
    lines = text.split("\n")
    code, outside, fence, pending = [], [], None, None
    for i, line in enumerate(lines, 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and m:
            fence, outside = m.group(1), outside + [""]
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                fence, pending = None, None
            elif pending and pending[1].endswith("\\"):
                pending[1] = pending[1][:-1] + " " + line.strip()
            else:
                pending = [i, line.strip()]
                code.append(pending)
            outside.append("")
            continue
        outside.append(line)
    code = [(i, c) for i, c in code if c]
    spans, prose, text, pos = [], [], "\n".join(outside), 0
    line_of = lambda off: text.count("\n", 0, off) + 1  # noqa: E731
    while True:  # CommonMark code spans: a run of n backticks up to the next run of exactly n, within a paragraph
        m = re.compile(r"`+").search(text, pos)
        if not m:
            break
        close = re.compile(r"(?<!`)" + m.group(0) + r"(?!`)").search(text, m.end())
        if not close or "\n\n" in text[m.end():close.start()]:
            pos = m.end()
            continue
        prose.append((line_of(pos), text[pos:m.start()]))
        spans.append((line_of(m.end()), text[m.end():close.start()].replace("\n", " ").strip()))
        pos = close.end()
    prose.append((line_of(pos), text[pos:]))
    return code, spans, prose


def tokens(command):
    """Shell words of a command, comments dropped (plain whitespace split where the quoting does not parse)."""
    try:
        return shlex.split(command, comments=True)
    except ValueError:
        return command.split()


def commands(words):
    """-> [(script or None, its arguments, is pytest, all words)] for each command of a line (split at && || ; |)."""
    out, seg = [], []
    for w in words + [";"]:
        if w not in ("&&", "||", ";", "|"):
            seg.append(w)
            continue
        while seg and (re.match(r"^[A-Za-z_]\w*=", seg[0]) or seg[0] == "nice"):
            seg = seg[1:]
        if seg and seg[0] == "timeout":
            seg = seg[2:]
        if not seg:
            continue
        head, script, rest, pytest_ = seg[0], None, [], False
        if PYTHON.match(head) and len(seg) > 1:
            if seg[1] == "-m":
                pytest_, rest = seg[2:3] == ["pytest"], seg[3:]
            else:
                script, rest = seg[1], seg[2:]
        elif head == "torchrun":
            at = next((k for k, w in enumerate(seg) if w.endswith(".py")), None)
            if at is not None:
                script, rest = seg[at], seg[at + 1:]
        elif head in ("bash", "sh") and len(seg) > 1:
            script, rest = seg[1], seg[2:]
        elif head.endswith((".py", ".sh")):
            script, rest = head, seg[1:]
        out.append((script, rest, pytest_, seg))
        seg = []
    return out


def is_command(span):
    words = tokens(span)
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        words = words[1:]
    return bool(words) and (PYTHON.match(words[0]) or words[0] in ("torchrun", "bash", "nice")
                            or words[0].endswith((".py", ".sh")))


def flags_of(words):
    return [m.group(1).split("=")[0] for w in words if (m := FLAG.match(w))]


def repo_path(word):
    """The repository path a word names, or None when it names none (or one we do not check)."""
    w = word.split("::")[0].strip("`'\"()[]{},;:").rstrip(".")  # a pytest node id names its file
    if not re.fullmatch(r"[\w./+=-]+", w) or "..." in w or not (w.endswith(EXTENSIONS) or w.startswith(PREFIXES)):
        return None
    if w.startswith(("runs/", "/", "~", "OUT/", ".venv/")) or w in FOREIGN_FILES:
        return None
    if any(part in PLACEHOLDERS for part in re.split(r"[/._-]", w)):
        return None
    return w


# ---- what exists ------------------------------------------------------------------------------------------------

HELP = {}


def help_flags(script, capsys):
    """The long flags a top-level script's --help lists (cached per script), or None when it has no main()."""
    name = script.removesuffix(".py")
    if name not in HELP:
        module = importlib.import_module(name)
        if not callable(getattr(module, "main", None)) or f"{name}.py" not in top_level_scripts():
            HELP[name] = None
            return None
        capsys.readouterr()
        with pytest.raises(SystemExit):
            module.main(["--help"])
        out = capsys.readouterr().out
        options = [line.strip() for line in out.splitlines() if re.match(r"^\s{1,8}-", line)]
        HELP[name] = {f for line in options for f in re.findall(r"--[\w-]+", re.split(r"\s{2,}", line)[0])}
    return HELP[name]


def other_script_flags():
    """The flags the scripts under assignments/ and scripts/ define (add_argument's strings, from their text)."""
    found = set()
    for p in glob.glob(os.path.join(ROOT, "assignments", "*.py")) + glob.glob(os.path.join(ROOT, "scripts", "*.py")):
        for call in re.findall(r"add_argument\(([^)]*)", open(p, encoding="utf-8").read()):
            found |= set(re.findall(r"[\"'](--[\w-]+)[\"']", call))
    return found


def top_level_scripts():
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.py"))
                  if 'if __name__ == "__main__":' in open(p, encoding="utf-8").read())


def exists(path, doc):
    return any(os.path.exists(os.path.join(base, path)) for base in (ROOT, os.path.join(ROOT, os.path.dirname(doc))))


def problems(doc, text, capsys):
    """Every flag, file and module name in text (the document doc) that does not exist, as 'doc:line: ...'."""
    code, spans, prose = read_doc(text)
    found = []

    def check_file(line, word):
        p = repo_path(word)
        if p and not exists(p, doc):
            found.append(f"{doc}:{line}: file `{p}` does not exist")

    def check_command(line, command):
        for script, rest, pytest_, seg in commands(tokens(command)):
            for w in seg:
                check_file(line, w)
            if pytest_ or script is None:
                continue
            path = repo_path(script) or script
            if not exists(path, doc):
                continue  # not ours (or already reported as a missing file)
            top = "/" not in path and path.endswith(".py") and os.path.exists(os.path.join(ROOT, path))
            known = help_flags(path, capsys) if top else None
            for flag in flags_of(rest):
                if known is not None:
                    ok, where = flag in known, f"{path} --help"
                else:
                    src = os.path.join(ROOT, path) if os.path.exists(os.path.join(ROOT, path)) else \
                        os.path.join(ROOT, os.path.dirname(doc), path)
                    ok, where = re.search(re.escape(flag) + r"(?![\w-])", open(src, encoding="utf-8").read()), path
                if not ok:
                    shown = command.split(" #")[0].strip()[:120]
                    found.append(f"{doc}:{line}: flag {flag} is not in {where} (in: {shown})")

    for line, command in code:
        check_command(line, command)
    every = set().union(other_script_flags(), *(help_flags(s, capsys) or set() for s in top_level_scripts()))
    for line, span in spans:
        if is_command(span):
            check_command(line, span)
            continue
        for w in re.split(r"[\s,;()\[\]]+", span):
            check_file(line, w)
        if span.startswith("--"):
            for flag in flags_of(span.split()):
                if flag not in every and flag not in FOREIGN_FLAGS:
                    found.append(f"{doc}:{line}: flag {flag} is in no script's --help")
        for module, name in MODULE_NAME.findall(span):
            if os.path.exists(os.path.join(ROOT, module + ".py")) and "." + name not in EXTENSIONS + (".json",):
                if not hasattr(importlib.import_module(module), name):
                    found.append(f"{doc}:{line}: `{module}.{name}`: {module}.py has no {name}")
    for line, chunk in prose:
        for k, part in enumerate(chunk.split("\n")):
            for m in PROSE_PATH.finditer(part):
                check_file(line + k, m.group(1))
    return found


# ---- the tests --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_file_and_name_a_document_names_exists(doc, capsys):
    found = problems(doc, open(os.path.join(ROOT, doc), encoding="utf-8").read(), capsys)
    assert not found, "\n".join(found)


BOGUS = """# A bogus page
Run `python bench.py --no-such-flag`, read `docs/nowhere.md` and `gradprobe.no_such_probe`; `--nor-this-one`.

```bash
python evaluate.py --benchmark gsm8k --made-up 3 && bash scripts/setup.sh
torchrun --nproc_per_node=2 train_outer.py --steps 4 \\
    --also-made-up
python -m pytest tests/test_nothing.py -q -x
hf download org/name --local-dir x
```

A file named in prose: tests/missing_data.jsonl. Fine: `runs/x.jsonl`, `planted/N.py`, `OUT/<name>.jsonl`, `--lr`.
"""


def test_the_checker_finds_what_does_not_exist(capsys):
    found = problems("docs/bogus.md", BOGUS, capsys)
    expected = ["docs/bogus.md:2: flag --no-such-flag is not in bench.py --help",
                "docs/bogus.md:2: file `docs/nowhere.md` does not exist",
                "docs/bogus.md:2: `gradprobe.no_such_probe`: gradprobe.py has no no_such_probe",
                "docs/bogus.md:2: flag --nor-this-one is in no script's --help",
                "docs/bogus.md:5: flag --made-up is not in evaluate.py --help",
                "docs/bogus.md:6: flag --also-made-up is not in train_outer.py --help",
                "docs/bogus.md:8: file `tests/test_nothing.py` does not exist",
                "docs/bogus.md:12: file `tests/missing_data.jsonl` does not exist"]
    for e in expected:
        assert any(f.startswith(e) for f in found), (e, found)
    assert len(found) == len(expected), found

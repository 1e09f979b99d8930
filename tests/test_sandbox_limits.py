"""The sandbox's limits and what still works inside them (sandbox.py): exhaustion of memory, CPU, threads,
processes, disk and output is contained, whatever the child does the parent gets a Result, legitimate code runs,
/tmp and /dev/shm share one capped disk, and without bubblewrap nothing runs unless the caller says so."""
import os
import subprocess

import pytest

import sandbox
from sandbox import run_python
from conftest import HOOK, PY

pytestmark = pytest.mark.sandbox  # skipped with the reason where bubblewrap cannot start (conftest.py)
needs_root_tmpfs = pytest.mark.skipif(os.geteuid() != 0, reason="the inode cap needs root: bubblewrap's --tmpfs takes "
                                      "only --size, so without root /tmp and /dev/shm are capped in bytes, not files")


# ---- resources ----------------------------------------------------------------------------------------------

@HOOK
@pytest.mark.parametrize("name,code", [
    ("memory", "x = bytearray(10 * 2**30)\nprint('allocated')"),
    ("cpu loop", "while True:\n    pass"),
    ("threads", "import threading, time\nfor _ in range(10**5): threading.Thread(target=time.sleep, args=(9,)).start()"),
    ("fork bomb", "import os\nwhile True:\n    os.fork()"),
], ids=["memory", "cpu", "threads", "fork-bomb"])
def test_exhaustion_is_contained(name, code, hook):
    r = run_python(code, timeout=2, hook=hook)
    assert not r.ok and "allocated" not in r.stdout
    assert run_python("print(6 * 7)").stdout == "42\n"  # and the next run is normal


@HOOK
def test_total_disk_is_capped_beyond_the_per_file_cap(hook):
    code = ("n = 0\ntry:\n    for i in range(200):\n        with open(f'/tmp/f{i}', 'wb') as f:\n"
            "            f.write(b'x' * (8 << 20))\n        n += 8\nexcept OSError:\n    pass\nprint(n)")
    r = run_python(code, timeout=20, hook=hook, max_file_mb=16, disk_mb=64)
    assert r.stdout.strip() and int(r.stdout) <= 64  # 200 files of 8 MB, each under the file cap; the disk is 64 MB


@HOOK
def test_huge_output_is_capped(hook):
    r = run_python("import sys\nfor _ in range(20): sys.stdout.write('x' * 10**6)", timeout=10, max_output=1000,
                   hook=hook)
    assert r.stdout == "x" * 1000


# ---- the parent cannot be hurt ------------------------------------------------------------------------------

@HOOK
@pytest.mark.parametrize("code", [
    "import os\nos.close(1)\nos.mkfifo('/tmp/f')\nos.open('/tmp/f', os.O_RDWR)\nprint('x' * 10**5)",
    "import os\nos.close(1)\nos.mkdir('/tmp/d')\nos.open('/tmp/d', os.O_RDONLY)",
    "import os\nos.close(0); os.close(1); os.close(2)",
    "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00\\xed\\xa0\\x80ok')",
    "print('\ud800')",
    "x = '\ud800'\nprint(1)",
    "print(1)\x00",
], ids=["fifo-stdout", "dir-stdout", "closed-stdio", "bad-utf8", "surrogate-print", "surrogate-code", "nul"])
def test_the_parent_gets_a_result_whatever_the_child_does(code, hook):
    r = run_python(code, timeout=5, hook=hook)
    assert isinstance(r.stdout, str) and isinstance(r.stderr, str)
    if "\\xff" in code:
        assert r.stdout == "\ufffd\ufffd\x00\ufffd\ufffd\ufffdok"  # invalid UTF-8 replaced, NUL kept
    assert run_python("print(6 * 7)").stdout == "42\n"


# ---- legitimate code works ----------------------------------------------------------------------------------

LEGIT = {
    "numpy": ("import numpy as np\nprint(int(np.arange(10).sum()), np.linalg.inv(np.eye(2)).tolist())",
              "45 [[1.0, 0.0], [0.0, 1.0]]"),
    "math": ("import math\nprint(math.comb(10, 3), math.gcd(12, 18), round(math.pi, 4))", "120 6 3.1416"),
    "itertools": ("import itertools\nprint(list(itertools.permutations('ab')))", "[('a', 'b'), ('b', 'a')]"),
    "collections": ("from collections import Counter, namedtuple, deque\nP = namedtuple('P', 'x y')\n"
                    "print(Counter('aab').most_common(1), P(1, 2), deque([1, 2], maxlen=1))",
                    "[('a', 2)] P(x=1, y=2) deque([2], maxlen=1)"),
    "re": ("import re\nprint(re.findall(r'\\d+', 'a1b22'))", "['1', '22']"),
    "functools": ("from functools import lru_cache, reduce\n@lru_cache\ndef f(n): return n if n < 2 else f(n-1) + f(n-2)\n"
                  "print(f(50), reduce(lambda a, b: a * b, range(1, 6)))", "12586269025 120"),
    "heapq": ("import heapq\nprint(heapq.nsmallest(2, [5, 1, 4]))", "[1, 4]"),
    "fractions": ("from fractions import Fraction\nprint(Fraction(1, 3) + Fraction(1, 6))", "1/2"),
    "decimal": ("from decimal import Decimal, getcontext\ngetcontext().prec = 5\nprint(Decimal(1) / Decimal(7))",
                "0.14286"),
    "files in tmp": ("open('a.txt', 'w').write('hi')\nprint(open('/tmp/a.txt').read())", "hi"),
    "stdin": ("print(input()[::-1])", "cba"),
}


@HOOK
@pytest.mark.parametrize("name", list(LEGIT))
def test_legit_code_works(name, hook):
    code, want = LEGIT[name]
    r = run_python(code, timeout=20, hook=hook, stdin="abc\n")
    assert r.ok and r.stdout.strip() == want, r.stderr


# ---- without bubblewrap; an environment anywhere -------------------------------------------------------------

def test_without_bubblewrap_code_is_not_run(monkeypatch):
    sandbox.available.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    try:
        r = run_python("print(6 * 7)")
        assert not r.executed and not r.ok and "bubblewrap" in r.reason and r.stdout == ""
        assert run_python("print(6 * 7)", unsafe=True).stdout == "42\n"  # only when the caller says so
    finally:
        monkeypatch.undo()
        sandbox.available.cache_clear()


@pytest.mark.parametrize("via_symlink", [False, True], ids=["venv", "symlink"])
def test_an_environment_under_the_temp_dir_runs_inside_the_sandbox(tmp_path, via_symlink):
    """A Python environment can live anywhere, /tmp included: the sandbox mounts it over its private /tmp."""
    venv = tmp_path / "venv"  # under the system temp directory, like a user's /tmp/x/.venv
    subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_dir = subprocess.run([str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    import numpy  # the new environment reaches this one's packages through a .pth file, as conda and editable installs do
    with open(os.path.join(site_dir, "parent.pth"), "w") as f:
        f.write(os.path.dirname(os.path.dirname(numpy.__file__)) + "\n")
    if via_symlink:
        os.symlink(venv, tmp_path / "link")
        venv = tmp_path / "link"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import sandbox; "
            "r = sandbox.run_python('import numpy; print(numpy.arange(5).sum()); open(\"w\", \"w\").write(\"x\")'); "
            "print(sys.prefix, r.executed, repr(r.stdout), r.stderr[-300:], sep='|')")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code, repo], capture_output=True, text=True,
                         timeout=120).stdout.strip().split("|")
    assert out[0] == str(venv) and out[1:3] == ["True", repr("10\n")], out  # numpy ran, and /tmp is still writable


# ---- /tmp, /dev/shm and /dev: one capped disk, files capped too (as root), the rest read-only --------------------

@HOOK
def test_tmp_and_dev_shm_share_one_disk_budget(hook):
    code = ("n = 0\nfor d in ('/tmp', '/dev/shm'):\n    try:\n        for i in range(64):\n"
            "            with open(f'{d}/f{i}', 'wb') as f:\n                for _ in range(8):\n"
            "                    f.write(b'x' * (1 << 20))\n                    f.flush()\n                    n += 1\n"
            "    except OSError:\n        pass\nprint(n)")
    r = run_python(code, timeout=30, hook=hook, max_file_mb=16, disk_mb=64)
    assert r.stdout.strip() and 56 <= int(r.stdout) <= 64, r.stdout + r.stderr  # MB written: was 128


@HOOK
def test_dev_is_read_only(hook):
    r = run_python("import os\nfor p in ('/dev/x', '/x', '/etc/x'):\n    try:\n        open(p, 'w')\n"
                   "        print('wrote', p)\n    except OSError:\n        pass", timeout=5, hook=hook)
    assert r.ok and "wrote" not in r.stdout, r.stdout + r.stderr


@needs_root_tmpfs
@HOOK
def test_a_million_empty_files_stop_at_the_inode_cap(hook):
    code = ("import os\nn = 0\nfor d in ('/tmp', '/dev/shm'):\n    try:\n        for i in range(10**6):\n"
            "            os.close(os.open(f'{d}/e{i}', os.O_CREAT | os.O_WRONLY, 0o600))\n            n += 1\n"
            "    except OSError:\n        pass\nprint(n)")
    r = run_python(code, timeout=60, hook=hook, disk_mb=64)
    cap = 64 * sandbox.INODES_PER_MB
    assert not r.timed_out and r.seconds < 20, (r.seconds, r.stdout)
    assert r.stdout.strip() and cap - 64 <= int(r.stdout) <= cap, r.stdout + r.stderr  # files made: a few inodes
    # are the directories bubblewrap makes under /tmp for the Python environment

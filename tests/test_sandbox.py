"""The sandbox from outside: every attack is run with the in-process audit hook on and off, and its effect is
checked on the host (files, listeners, processes, the parent's secrets), never by the child's own error message."""
import ctypes
import errno
import os
import platform
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading

import pytest

import benchmarks
import evaluate
import sandbox
import seccomp
from planner import plan_tests
from sandbox import run_python, run_tests

pytestmark = pytest.mark.sandbox  # skipped with the reason where bubblewrap cannot start (conftest.py)
HOOK = pytest.mark.parametrize("hook", [True, False], ids=["hook", "nohook"])
PY = sys.executable


@pytest.fixture
def target():
    """A world-writable directory on the host, so only the sandbox (not permissions) keeps the code out of it."""
    t = tempfile.mkdtemp(prefix="sbx-target-", dir="/tmp")
    os.chmod(t, 0o777)
    os.mkdir(os.path.join(t, "sub"))
    os.chmod(os.path.join(t, "sub"), 0o777)
    with open(os.path.join(t, "victim.txt"), "w") as f:
        f.write("keep")
    os.chmod(os.path.join(t, "victim.txt"), 0o666)
    yield t
    shutil.rmtree(t, ignore_errors=True)


def snapshot(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            data = open(p, "rb").read() if os.path.isfile(p) and not os.path.islink(p) else None
            out[p] = (st.st_mode, st.st_uid, st.st_mtime_ns, st.st_nlink, data, os.listxattr(p, follow_symlinks=False))
    return out


# ---- files: writes, deletes, renames, links, FIFOs, devices, metadata outside ---------------------------------

FILE_ATTACKS = {
    "write": "open('{F}', 'w').write('pwned')",
    "append": "open('{F}', 'a').write('pwned')",
    "create": "open('{T}/new.txt', 'w').write('x')",
    "os.open create": "import os; os.write(os.open('{T}/new.txt', os.O_CREAT | os.O_WRONLY), b'x')",
    "dir_fd create": "import os; d = os.open('{T}', os.O_RDONLY); os.open('new.txt', os.O_CREAT | os.O_WRONLY, dir_fd=d)",
    "remove": "import os; os.remove('{F}')",
    "rmdir": "import os; os.rmdir('{T}/sub')",
    "rmtree": "import shutil; shutil.rmtree('{T}')",
    "rename": "import os; os.rename('{F}', '{T}/moved.txt')",
    "replace": "import os; open('/tmp/x', 'w').write('x'); os.replace('/tmp/x', '{F}')",
    "rename out of tmp": "import os; open('/tmp/x', 'w').write('x'); os.rename('/tmp/x', '{T}/in.txt')",
    "link": "import os; os.link('{F}', '{T}/hard')",
    "link into tmp": "import os; os.link('{F}', '/tmp/hard'); open('/tmp/hard', 'a').write('x')",
    "symlink": "import os; os.symlink('/etc/passwd', '{T}/sym')",
    "mkdir": "import os; os.mkdir('{T}/newdir')",
    "mkfifo": "import os; os.mkfifo('{T}/fifo')",
    "mknod": "import os, stat; os.mknod('{T}/node', stat.S_IFCHR | 0o666, os.makedev(1, 3))",
    "chmod": "import os; os.chmod('{F}', 0o777)",
    "fchmod": "import os; os.fchmod(os.open('{F}', os.O_RDONLY), 0o777)",
    "chown": "import os; os.chown('{F}', 0, 0)",
    "utime": "import os; os.utime('{F}', (0, 0))",
    "setxattr": "import os; os.setxattr('{F}', 'user.pwned', b'1')",
    "truncate": "import os; os.truncate('{F}', 0)",
    "shutil.move": "import shutil; shutil.move('{T}/sub', '/tmp/sub')",
}


@HOOK
@pytest.mark.parametrize("name", list(FILE_ATTACKS))
def test_files_outside_are_untouched(name, hook, target):
    code = FILE_ATTACKS[name].format(T=target, F=os.path.join(target, "victim.txt"))
    before = snapshot(target)
    run_python(code, timeout=5, hook=hook)
    assert snapshot(target) == before


@HOOK
@pytest.mark.parametrize("where", ["prefix", "shm", "shared_memory"])
def test_python_dirs_and_dev_shm_are_not_writable(where, hook):
    name = "sbx-" + secrets.token_hex(4)
    code = {"prefix": f"open({sys.prefix + '/' + name!r}, 'w').write('x')",
            "shm": f"open('/dev/shm/{name}', 'w').write('x')",
            "shared_memory": f"from multiprocessing import shared_memory as s\ns.SharedMemory({name!r}, True, 99)"}
    run_python(code[where], timeout=5, hook=hook)
    assert not os.path.exists(os.path.join(sys.prefix, name))
    assert not os.path.exists(f"/dev/shm/{name}")


# ---- secrets: the parent's environment and memory, root-only files -------------------------------------------

@pytest.fixture
def secret(monkeypatch, target):
    s = "sbx-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("SBX_SECRET", s)
    path = os.path.join(target, "root-only.txt")
    with open(path, "w") as f:
        f.write(s)
    os.chmod(path, 0o600)
    return s, path


SECRET_ATTACKS = {
    "environ": "import os; print(dict(os.environ))",
    "parent environ": "print(open('/proc/{P}/environ').read())",
    "every environ": ("import glob\nfor p in glob.glob('/proc/*/environ'):\n    try: print(open(p).read())\n"
                      "    except Exception: pass"),
    "root-only file": "print(open('{S}').read())",
    "parent root": "print(open('/proc/{P}/root{S}').read())",
    "parent cwd": "import os; print(os.listdir('/proc/{P}/cwd'))",
    "parent mem": ("import re\nm = open('/proc/{P}/mem', 'rb')\nfor l in open('/proc/{P}/maps'):\n"
                   "    a, b = (int(x, 16) for x in l.split()[0].split('-'))\n    try: m.seek(a); print(m.read(b - a))\n"
                   "    except Exception: pass"),
    "find by name": ("import os\nfor d, ds, fs in os.walk('/'):\n    ds[:] = [x for x in ds if x not in ('usr', 'proc') and "
                     "'python' not in x]\n    print([open(os.path.join(d, f)).read() for f in fs if 'root-only' in f])"),
}


@HOOK
@pytest.mark.parametrize("name", list(SECRET_ATTACKS))
def test_secrets_do_not_leak(name, hook, secret):
    s, path = secret
    r = run_python(SECRET_ATTACKS[name].format(P=os.getpid(), S=path), timeout=5, hook=hook, max_output=10**6)
    assert s not in r.stdout + r.stderr


@HOOK
def test_shadow_is_not_readable(hook):
    if not os.path.exists("/etc/shadow") or not open("/etc/shadow").read().strip():
        pytest.skip("no /etc/shadow here")
    line = open("/etc/shadow").read().splitlines()[0]
    r = run_python("print(open('/etc/shadow').read())", timeout=5, hook=hook)
    assert line not in r.stdout


# ---- network ------------------------------------------------------------------------------------------------

class Listener:
    """A TCP or UDP listener on the host that records whether anything reached it."""

    def __init__(self, kind="tcp", host="127.0.0.1", family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
        self.sock.bind((host, 0) if family != socket.AF_UNIX else host)
        self.port = self.sock.getsockname()[1] if family != socket.AF_UNIX else None
        self.hits, self.kind, self.stop = [], kind, False
        if kind == "tcp":
            self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stop:
            try:
                self.hits.append(self.sock.accept() if self.kind == "tcp" else self.sock.recvfrom(100))
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.t.join()
        self.sock.close()
        return self.hits


TCP_CLIENT = "import socket\ns = socket.create_connection(('{H}', {P}), timeout=2)\ns.sendall(b'hi')\nprint('connected')"


def test_the_network_check_can_fail():
    """Unsandboxed, the same client does reach the listener: the checks below would notice a leak."""
    ln = Listener()
    subprocess.run([PY, "-c", TCP_CLIENT.format(H="127.0.0.1", P=ln.port)], timeout=10)
    assert ln.close()


def _host_ip():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return s.connect(("192.0.2.1", 9)) or s.getsockname()[0]
        except OSError:
            return None


@HOOK
@pytest.mark.parametrize("name", ["tcp loopback", "tcp host address", "udp loopback", "tcp ipv6 loopback",
                                  "raw socket", "unix socket path", "abstract unix socket"])
def test_no_connection_reaches_the_host(name, hook, target):
    if name == "tcp host address" and not _host_ip():
        pytest.skip("no non-loopback address")
    if name == "tcp ipv6 loopback" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    if name in ("unix socket path", "abstract unix socket"):
        addr = os.path.join(target, "s.sock") if name == "unix socket path" else "\0sbx-" + secrets.token_hex(4)
        ln = Listener("tcp", addr, socket.AF_UNIX)
        code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({addr!r})\ns.sendall(b'hi')"
    elif name == "udp loopback":
        ln = Listener("udp")
        code = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" + \
               f"for _ in range(20): s.sendto(b'hi', ('127.0.0.1', {ln.port}))"
    elif name == "tcp ipv6 loopback":
        ln = Listener("tcp", "::1", socket.AF_INET6)
        code = TCP_CLIENT.format(H="::1", P=ln.port)
    elif name == "raw socket":
        ln = Listener("udp")
        code = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)\n" + \
               f"s.sendto(b'12345678hi', ('127.0.0.1', {ln.port}))"
    else:
        ln = Listener("tcp", "0.0.0.0" if name == "tcp host address" else "127.0.0.1")
        code = TCP_CLIENT.format(H=_host_ip() if name == "tcp host address" else "127.0.0.1", P=ln.port)
    run_python(code, timeout=5, hook=hook)
    assert not ln.close()


@HOOK
def test_no_dns_and_no_interface_but_loopback(hook):
    r = run_python("import socket\nprint(socket.if_nameindex())\ntry: print('RESOLVED', socket.getaddrinfo("
                   "'localhost.localdomain.example', 80))\nexcept Exception: pass", timeout=5, hook=hook)
    assert "RESOLVED" not in r.stdout and "eth" not in r.stdout


# ---- processes: every route, none outlives the run; signals to others ---------------------------------------

def _survivors(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(pid)
        except OSError:
            pass
    return found


SLEEPER = "[{py!r}, '-c', 'import time; time.sleep(60)', {m!r}]"
SPAWN = {
    "fork+exec, setsid": ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0: os.execv(A[0], A)\n"
                          "    os._exit(0)"),
    "posix_spawn": "import os; os.posix_spawn(A[0], A, {})",
    "subprocess new session": "import subprocess; subprocess.Popen(A, start_new_session=True)",
    "os.system background": "import os, shlex; os.system(' '.join(map(shlex.quote, A)) + ' &')",
    "os.spawnv": "import os; os.spawnv(os.P_NOWAIT, A[0], A)",
    "pty.fork": "import os, pty\npid, fd = pty.fork()\nif pid == 0: os.execv(A[0], A)",
    "forkpty": "import os\npid, fd = os.forkpty()\nif pid == 0: os.execv(A[0], A)",
    "multiprocessing": ("import multiprocessing as mp, os\ndef f(): os.execv(A[0], A)\n"
                        "if __name__ == '__main__':\n    p = mp.get_context('fork').Process(target=f); p.start()"),
    "spawnv_passfds": "from multiprocessing.util import spawnv_passfds; spawnv_passfds(A[0], A, ())",
    "_posixsubprocess setsid": ("import _posixsubprocess, os\nr, w = os.pipe()\n"
                                "_posixsubprocess.fork_exec(A, [A[0].encode()], True, (w,), None, None, -1, -1, -1, -1, "
                                "-1, -1, r, w, False, True, -1, None, None, None, -1, None)"),
    "ctypes fork": "import ctypes, os\nif ctypes.CDLL(None).fork() == 0:\n    os.setsid()\n    os.execv(A[0], A)",
    "exec in place": "import os; os.execv(A[0], A)",
}


@HOOK
@pytest.mark.parametrize("wait", [False, True], ids=["exits", "times-out"])
@pytest.mark.parametrize("name", list(SPAWN))
def test_no_process_outlives_the_run(name, wait, hook):
    if wait and (hook or name not in ("fork+exec, setsid", "_posixsubprocess setsid", "subprocess new session")):
        pytest.skip("the timed-out case is checked on three routes, with the OS boundary alone")
    marker = "sbx-marker-" + secrets.token_hex(6)
    code = f"A = {SLEEPER.format(py=PY, m=marker)}\n" + SPAWN[name] + ("\nimport time; time.sleep(30)" if wait else "")
    run_python(code, timeout=2, hook=hook)
    assert not _survivors(marker)


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "60"], user=sandbox.NOBODY, group=sandbox.NOBODY, extra_groups=[],
                         start_new_session=True)
    yield p
    p.kill()
    p.wait()


KILLS = {
    "kill": "import os, signal; os.kill({P}, signal.SIGKILL)",
    "killpg": "import os, signal; os.killpg({P}, signal.SIGKILL)",
    "kill -1": "import os, signal; os.kill(-1, signal.SIGKILL)",
    "pidfd": "import os, signal; signal.pidfd_send_signal(os.pidfd_open({P}), signal.SIGKILL)",
    "kill parent": "import os, signal; os.kill({Q}, signal.SIGSTOP)",
    "ctypes kill": "import ctypes; ctypes.CDLL(None).kill({P}, 9)",
}


@HOOK
@pytest.mark.parametrize("name", list(KILLS))
def test_other_processes_cannot_be_signalled(name, hook, sleeper):
    run_python(KILLS[name].format(P=sleeper.pid, Q=os.getpid()), timeout=5, hook=hook)
    assert sleeper.poll() is None
    assert open(f"/proc/{os.getpid()}/stat").read().split(")")[1].split()[0] != "T"


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


# ---- tampering with the sandbox's own Python state ------------------------------------------------------------

TAMPER = {
    "builtins": "import builtins, os\nbuiltins.isinstance = lambda *a: False\nos.path.realpath = lambda p: '/tmp'\n",
    "fspath": "import os\nos.fspath = lambda p: '/tmp/x'\n",
    "gc": ("import gc\nfor o in gc.get_objects():\n    if isinstance(o, (set, frozenset)) and 'os.fork' in o:\n"
           "        try: o.clear()\n        except Exception: pass\n"),
}


@HOOK
@pytest.mark.parametrize("name", list(TAMPER))
def test_tampering_with_python_state_opens_nothing(name, hook, target):
    code = TAMPER[name] + f"try: open({target + '/victim.txt'!r}, 'w').write('pwned')\nexcept Exception: pass\n" + \
           f"A = {SLEEPER.format(py=PY, m='sbx-tamper')}\nimport subprocess; subprocess.Popen(A, start_new_session=True)"
    before = snapshot(target)
    run_python(code, timeout=3, hook=hook)
    assert snapshot(target) == before and not _survivors("sbx-tamper")


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


# ---- code scoring that cannot be gamed ----------------------------------------------------------------------

def _items():
    he, mb = evaluate.load_benchmark("humaneval")[0], evaluate.load_benchmark("mbpp")[0]
    return {"humaneval": (he["prompt"] + he["gold"], he["prompt"] + "    return True\n", he["tests"]),
            "mbpp": (mb["gold"], "def remove_Occ(s, ch):\n    return s\n", mb["tests"])}


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


@pytest.mark.parametrize("bench", ["humaneval", "mbpp"])
def test_scoring_passes_right_code_and_fails_wrong_code(bench):
    right, wrong, tests = _items()[bench]
    r = run_tests(right, tests, timeout=10)
    assert r.passed and not run_tests(wrong, tests, timeout=10).passed


@pytest.mark.parametrize("hook", [True, False], ids=["hook", "nohook"])
@pytest.mark.parametrize("bench", ["humaneval", "mbpp"])
@pytest.mark.parametrize("game", list(GAMES))
def test_scoring_cannot_be_gamed(game, bench, hook):
    right, wrong, tests = _items()[bench]
    assert not run_tests(wrong + "\n" + GAMES[game] + "\n", tests, timeout=5, hook=hook).passed


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
    sent = json_dumps(plan.steps)
    assert all(v not in sent for v in ("== 2", "4.0", "6, rel", "[8]", "2 * x"))
    mp = next(x for x in benchmarks.load_benchmark("mbppplus") if x["id"] == 2)
    results = mp["tests"].split("results = ", 1)[1].split("\n", 1)[0]
    assert mp["plan"].fallback == 0 and results[:40] not in json_dumps(mp["plan"].steps)


def json_dumps(x):
    import json
    return json.dumps(x)


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


# ---- the kernel: keyrings, the system-call filter, memory and files no rlimit bounds -----------------------

ARCH = platform.machine()
COL = 0 if ARCH == "x86_64" else 1
needs_filter = pytest.mark.skipif(seccomp.seccomp_program() is None,
                                  reason=f"no system-call table for {ARCH} in seccomp.py: the filter is not loaded")
needs_root_tmpfs = pytest.mark.skipif(os.geteuid() != 0, reason="the inode cap needs root: bubblewrap's --tmpfs takes "
                                      "only --size, so without root /tmp and /dev/shm are capped in bytes, not files")


def _nr(name):
    return seccomp.DENIED[name][COL]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _bpf(prog, arch, nr):
    """A classic-BPF interpreter for the four instructions the filter uses, on seccomp_data {nr, arch}."""
    data, ins, pc, a = struct.pack("=iI", nr, arch), [struct.unpack("=HBBI", prog[i:i + 8])
                                                     for i in range(0, len(prog), 8)], 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == 0x20:
            a, pc = struct.unpack_from("=I", data, k)[0], pc + 1
        elif code in (0x15, 0x35):
            pc += 1 + (jt if (a == k if code == 0x15 else a >= k) else jf)
        else:
            assert code == 0x06
            return k


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_filter_program_refuses_exactly_the_denied_calls(arch):
    prog, deny, allow = seccomp.seccomp_program(arch), 0x00050000 | errno.EPERM, 0x7FFF0000
    own = seccomp.AUDIT_ARCH[arch]
    denied = {v[0 if arch == "x86_64" else 1] for v in seccomp.DENIED.values()}
    assert len(denied) == len(seccomp.DENIED)  # no two names share a number: a typo would show here
    for nr in denied:
        assert _bpf(prog, own, nr) == deny
    for nr in set(range(0, 460)) - denied:  # read, write, openat, mmap, clone, execve, exit_group, ... allowed
        assert _bpf(prog, own, nr) == allow
    assert _bpf(prog, 0x40000003, 20) == deny  # AUDIT_ARCH_I386: the 32-bit entry (int 0x80) on x86_64
    assert _bpf(prog, 0x40000028, 20) == deny  # AUDIT_ARCH_ARM: 32-bit ARM
    if arch == "x86_64":
        assert _bpf(prog, own, seccomp.X32_SYSCALL_BIT | 39) == deny  # x32's getpid


PROBE = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
arg = lambda a: ctypes.c_long(os.getpid() if a == 'self' else a) if isinstance(a, (int, str)) else a
for name, nr, args in {P!r}:
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *map(arg, args))
    print(name, ctypes.get_errno() if r == -1 else 'ok', flush=True)
"""
# Each probe's arguments make the kernel itself answer something other than EPERM (success, EFAULT, EINVAL, EBADF,
# ENOKEY) when the call reaches it, so an EPERM can only come from the filter: test_probes_reach_the_kernel_...
# shows that with the filter off. Not probed live: pivot_root, fsopen, fsmount, fspick, move_mount, kexec_*, *_module
# (the kernel refuses them here anyway, the sandbox has no capabilities: EPERM either way); their filter decision is
# checked by test_the_filter_program_refuses_exactly_the_denied_calls.
PROBES = {
    "keyrings": [("keyctl", (0, -3, 1)), ("add_key", (b"user", b"sbx-probe", b"x", 1, -3)),
                 ("request_key", (b"user", b"sbx-absent", None, 0))],
    "other processes": [("process_vm_readv", ("self", None, 0, None, 0, 1)),
                        ("process_vm_writev", ("self", None, 0, None, 0, 1)), ("pidfd_getfd", (-1, 0, 0)),
                        ("kcmp", ("self", "self", 99, 0, 0)), ("ptrace", (0x4201, 999999, 0, 0))],
    "io_uring": [("io_uring_setup", (1, None)), ("io_uring_enter", (-1, 0, 0, 0, None, 0)),
                 ("io_uring_register", (-1, 0, None, 0))],
    "userfaultfd": [("userfaultfd", (1,))],  # UFFD_USER_MODE_ONLY: allowed without privileges
    "bpf": [("bpf", (9999, None, 0))],
    "perf_event_open": [("perf_event_open", (None, 0, -1, -1, 0))],
    "mounts": [("mount", (None, None, 1, 0, None)), ("umount2", (b"/tmp", 0x40000000)),
               ("open_tree", (-1, None, 0x40000000)), ("mount_setattr", (-1, None, 0x40000000, None, 0)),
               ("fsconfig", (-1, 9999, None, None, 0))],
    "namespaces": [("setns", (-1, 0)), ("unshare", (0,))],
    "memfd": [("memfd_create", (b"sbx", 0)), ("memfd_secret", (0,))],
    "System V IPC": [("shmget", (0, 4096, 0o600)), ("msgget", (0, 0o600))],
    "syslog": [("syslog", (10, None, 0))],  # SYSLOG_ACTION_SIZE_BUFFER
}


def _kernel_refuses():
    """Probes the kernel itself answers with EPERM here, so they cannot tell the filter's answer from its own."""
    return {"syslog"} if open("/proc/sys/kernel/dmesg_restrict").read().strip() == "1" else set()


def _probe(families):
    rows = [(n, _nr(n), a) for f in families for n, a in PROBES[f]]
    r = run_python(PROBE.format(P=rows), timeout=10, hook=False)  # the hook refuses ctypes: the filter alone here
    return dict(line.split() for line in r.stdout.splitlines()), r


@needs_filter
@pytest.mark.parametrize("family", list(PROBES))
def test_the_filter_refuses_each_denied_family(family):
    if family in _kernel_refuses():
        pytest.skip(f"the kernel refuses {family} here without the filter too (dmesg_restrict=1): EPERM either way")
    got, r = _probe([family])
    assert got == {n: str(errno.EPERM) for n, _ in PROBES[family]}, (got, r.stderr)


@needs_filter
def test_probes_reach_the_kernel_without_the_filter(monkeypatch):
    """The control: with the filter off, no probe gets EPERM, so the test above can fail."""
    monkeypatch.setattr(seccomp, "FILTER", False)
    got, r = _probe(list(PROBES))
    assert set(got) == {n for f in PROBES for n, _ in PROBES[f]}, r.stderr
    assert {n for n, e in got.items() if e == str(errno.EPERM)} == _kernel_refuses(), got


I386_GETPID = """import ctypes, mmap
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 20 (getpid, 32-bit table); int 0x80; ret
print(ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))())
"""


@needs_filter
@pytest.mark.skipif(ARCH != "x86_64", reason="32-bit and x32 entry: x86_64 only")
@pytest.mark.parametrize("filtered", [True, False], ids=["filter", "no-filter"])
def test_32bit_and_x32_entry_are_refused(filtered, monkeypatch):
    plain = subprocess.run([PY, "-c", I386_GETPID], capture_output=True, text=True, timeout=30).stdout.strip()
    if not plain.lstrip("-").isdigit() or int(plain) <= 0:
        pytest.skip("this kernel has no 32-bit system-call entry (int 0x80)")
    monkeypatch.setattr(seccomp, "FILTER", filtered)
    r = run_python(I386_GETPID, timeout=10, hook=False)
    x32 = run_python(PROBE.format(P=[("x32 getpid", seccomp.X32_SYSCALL_BIT | 39, ())]), timeout=10, hook=False)
    if filtered:  # the raw return value: -EPERM
        assert r.stdout.strip() == str(-errno.EPERM) and x32.stdout.split() == ["x32", "getpid", str(errno.EPERM)]
    else:  # the control: the 32-bit getpid answers (a PID), x32 is ENOSYS or a PID, never EPERM
        assert int(r.stdout) > 0 and x32.stdout.split()[-1] != str(errno.EPERM), (r.stdout, x32.stdout)


@pytest.fixture
def parent_key():
    """A secret in this process's session keyring (a fresh one, joined for the test), as a parent would keep it."""
    libc, ring = _libc(), -3  # KEY_SPEC_SESSION_KEYRING
    if libc.syscall(ctypes.c_long(_nr("keyctl")), ctypes.c_long(1), None) < 0:  # KEYCTL_JOIN_SESSION_KEYRING
        pytest.skip(f"the kernel refuses keyrings here: {os.strerror(ctypes.get_errno())}")
    s = ("sbx-key-" + secrets.token_hex(8)).encode()
    kid = libc.syscall(ctypes.c_long(_nr("add_key")), b"user", b"sbx-parent-key", s, ctypes.c_long(len(s)),
                       ctypes.c_long(ring))
    if kid < 0:
        pytest.skip(f"the kernel refuses a key here: {os.strerror(ctypes.get_errno())}")
    yield s.decode(), kid
    libc.syscall(ctypes.c_long(_nr("keyctl")), ctypes.c_long(3), ctypes.c_long(kid))  # KEYCTL_REVOKE


KEY_THIEF = """import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
K, buf = ctypes.c_long({K}), ctypes.create_string_buffer(4096)
ids = [{ID}] + [libc.syscall(K, ctypes.c_long(10), ctypes.c_long(r), b'user', b'sbx-parent-key', 0)  # KEYCTL_SEARCH
                for r in (-3, -4, -5, -2, -1)]  # session, user, user-session, process, thread keyrings
for i in ids:
    n = libc.syscall(K, ctypes.c_long(11), ctypes.c_long(i), buf, ctypes.c_long(4096))  # KEYCTL_READ
    print(i, n, buf.raw[:max(n, 0)])
print(open('/proc/keys').read())
"""


@HOOK
def test_the_parents_keyring_is_out_of_reach(hook, parent_key):
    s, kid = parent_key
    r = run_python(KEY_THIEF.format(K=_nr("keyctl"), ID=kid), timeout=10, hook=hook, max_output=10**5)
    assert s not in r.stdout + r.stderr
    assert subprocess.run([PY, "-c", KEY_THIEF.format(K=_nr("keyctl"), ID=kid)], capture_output=True,
                          text=True, timeout=30).stdout.count(s) > 0  # the same code, unsandboxed, reads it


def _descendants(root):
    kids = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            kids.setdefault(int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except OSError:
            pass
    out, todo = [], [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _tracer(pid):
    try:
        return int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("TracerPid:")))
    except (OSError, StopIteration):
        return 0


@HOOK
def test_the_namespaces_pid_1_cannot_be_traced(hook):
    code = ("import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.ptrace(16, 1, None, None), ctypes.get_errno(), flush=True)\ntime.sleep(3)")  # PTRACE_ATTACH
    traced, done = set(), threading.Event()

    def watch():  # from outside: any process under this test with a tracer, while the code runs
        while not done.is_set():
            traced.update(p for p in _descendants(os.getpid()) if _tracer(p))
            done.wait(0.05)
    w = threading.Thread(target=watch)
    w.start()
    try:
        r = run_python(code, timeout=10, hook=hook)
    finally:
        done.set()
        w.join()
    assert not traced, r.stdout


@HOOK
def test_memfd_cannot_hold_memory_past_the_limit(hook):
    code = ("import os\nheld = 0\ntry:\n    for i in range(96):  # 96 files of 16 MB, each under the file cap\n"
            "        fd = os.memfd_create(f'm{i}')\n        for _ in range(16):\n"
            "            os.write(fd, b'x' * (1 << 20))\n            held += 1\nexcept OSError as e:\n"
            "    print(e.errno)\nprint('held', held)")
    r = run_python(code, timeout=20, hook=hook, memory_mb=1024, max_file_mb=16)
    held = int(r.stdout.split()[-1]) if "held" in r.stdout else 0
    assert held < 1024, r.stdout  # MB kept in memory files: 1,536 without the filter, past the 1 GB limit


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

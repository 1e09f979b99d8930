"""
Run untrusted, model-generated Python behind an operating-system boundary (bubblewrap), never in our process.

What the code sees (`bwrap --unshare-all`): fresh user, mount, PID, network, IPC, UTS and cgroup namespaces; uid/gid
65534 (when we are root, bubblewrap itself runs as uid 65534 too, so the code owns no file on the host); the system
directories and exactly the Python directories it needs, read-only; a private /proc (only its own processes), a
minimal read-only /dev, and two writable places, tmpfs at /tmp (its working directory) and /dev/shm, sharing one
disk budget (and, as root, capped in inodes). Its own empty session keyring, and a system-call filter (seccomp,
seccomp.py, loaded by bubblewrap). No network interface but its own loopback, no inherited file descriptors, an
empty environment. Limits: wall clock (the whole PID namespace is killed), CPU time, address space and file size per
process, process count (RLIMIT_NPROC inside its own user namespace), total disk (the tmpfs sizes). Output comes back
through pipes, capped, decoded with replacement.

Where bubblewrap or user namespaces are missing, code is NOT run: the Result says `executed=False` and why, unless
the caller passes `unsafe=True` (a plain child process with rlimits only: unsafe, for trusted code).

Inside runs one program of ours, harness.py's, which runs the code. Its in-process audit hook (`hook=True`), a second
layer, refuses process creation, sockets, signals, ctypes and frame introspection; the OS boundary does not rely on it.

Scoring (run_tests) decides the verdict here, outside the code under test: the sandbox gets the solution and the test
inputs only, and sends back each call's value as plain data (builtin types; an object of any other class is a failed
case); this process holds the expected values and makes the benchmark's comparison. Assert forms the ast cannot split
into (call, expected, comparison) run in the sandbox, on plain-data copies, with the standard modules restored
(Plan.fallback counts them).

    run_python("print(1 + 1)")                           # -> Result(ok=True, stdout='2\\n', executed=True, ...)
    run_tests(solution_code, test_code).passed           # scoring: see run_tests
"""
import ast
import builtins
import ctypes
import json
import math
import os
import platform
import resource
import secrets
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from harness import PROGRAM
from seccomp import DENIED, filter_fd

NOBODY = 65534


@dataclass
class Result:
    ok: bool          # exited with status 0 within the limits
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    executed: bool = True   # False: not run (no sandbox here); `reason` says why
    reason: str = ""
    passed: bool = False    # run_tests only: every step reported and every comparison, made here, held
    detail: str = ""        # run_tests only: why it did not pass
    records: bytes = b""    # run_tests only, while it decides: the values the sandbox sent back


# ---- writable mounts: /tmp and /dev/shm share disk_mb; inodes capped too (as root) ----
SHM_SHARE = 8        # /dev/shm gets 1/8 of disk_mb, /tmp the rest
INODES_PER_MB = 256  # files (inodes) per MB of disk_mb: ~1.2 KB of kernel memory each, so ~0.3 MB per MB of disk


def _tmpfs_caps(disk_mb):
    """-> {"/tmp": (bytes, inodes), "/dev/shm": (bytes, inodes)}: sizes summing to disk_mb (at least one page each:
    tmpfs reads size=0 and nr_inodes=0 as unlimited), inodes summing to disk_mb * INODES_PER_MB (at least 16 each)."""
    total, inodes = max(disk_mb, 1) << 20, max(disk_mb, 1) * INODES_PER_MB
    shm, shm_inodes = max(total // SHM_SHARE, 4096), max(inodes // SHM_SHARE, 16)
    return {"/tmp": (total - shm, inodes - shm_inodes), "/dev/shm": (shm, shm_inodes)}


# Keyring calls for _preexec (numbers as in seccomp.DENIED): a fresh anonymous session keyring before the code starts
KEYCTL_JOIN_SESSION_KEYRING = 1


@dataclass
class _Stage:
    """What _preexec does as root before becoming uid 65534: bind mounts (source, target) and tmpfs mounts
    (target, size in bytes, inodes), all in a private mount namespace."""
    binds: list
    tmpfs: list


@lru_cache(maxsize=1)
def _python_dirs():
    """The directories the interpreter needs outside the system ones: its prefixes and every directory it puts on
    sys.path in isolated mode (site-packages, and whatever .pth files add: a conda prefix, an editable install),
    asked of the interpreter itself, deduplicated. Symlinked paths are kept beside their targets, so the
    interpreter finds itself under the name it was started with."""
    isolated = subprocess.run([sys.executable, "-I", "-c", "import sys; print('\\n'.join(sys.path))"],
                              capture_output=True, text=True, timeout=60).stdout.split("\n")
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))), *site.getsitepackages(), *isolated}
    dirs |= {os.path.realpath(d) for d in dirs if d}
    dirs = sorted(d for d in dirs if d and os.path.isabs(d) and os.path.isdir(d) and d != "/")
    system = ("/usr", "/bin", "/lib", "/lib64", "/sbin")
    keep = []
    for d in dirs:
        if any(d == s or d.startswith(s + "/") for s in system + tuple(keep)):
            continue
        keep.append(d)
    return keep


def _bwrap_args(sources, dests, disk_mb, writable=None, seccomp_fd=None):
    """bubblewrap's command line: namespaces, read-only system and Python directories, private /proc, /dev, /tmp.
    `writable` maps /tmp and /dev/shm to tmpfs mounts _preexec made (capped in size and inodes, as root); without it
    bubblewrap makes them, capped in size only. `seccomp_fd`: the system-call filter, read from that descriptor."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--disable-userns",
            "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        args += ["--ro-bind-try", f, f]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for d, (size, _) in _tmpfs_caps(disk_mb).items():
        args += ["--bind", writable[d], d] if writable else ["--size", str(size), "--tmpfs", d]
    for s, d in zip(sources, dests):  # after /tmp: an environment under /tmp stays visible on the private /tmp
        args += ["--ro-bind", s, d]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    for k, v in {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
                 "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}.items():
        args += ["--setenv", k, v]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args + ["--"]


def _preexec(memory_mb, cpu_seconds, max_file_mb, stage):
    """In the child, before exec: a fresh session keyring; (as root) mount the capped tmpfs for /tmp and /dev/shm and
    stage the Python directories where uid 65534 can reach them, in a private mount namespace, and become 65534;
    then the rlimits, which bubblewrap and everything it starts inherit."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: no imports after fork
    keyctl = DENIED["keyctl"][0 if platform.machine() == "x86_64" else 1]
    libc.syscall.restype = ctypes.c_long

    def apply():
        # The caller's session keyring is inherited across fork and exec: join a new, empty, anonymous one. Best
        # effort: the filter refuses every keyring call inside anyway, and a kernel without keyrings has none to leak.
        libc.syscall(ctypes.c_long(keyctl), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), None)
        if stage:
            if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS: the mounts below stay in this process tree
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if libc.mount(None, b"/", None, (1 << 14) | (1 << 18), None) != 0:  # MS_REC | MS_PRIVATE
                raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
            for dst, size, inodes in stage.tmpfs:  # MS_NOSUID | MS_NODEV; size and nr_inodes > 0: both capped
                opts = f"size={size},nr_inodes={inodes},mode=1777,uid={NOBODY},gid={NOBODY}".encode()
                if libc.mount(b"tmpfs", dst.encode(), b"tmpfs", 2 | 4, opts) != 0:
                    raise OSError(ctypes.get_errno(), f"mount tmpfs {dst}")
            for src, dst in stage.binds:
                if libc.mount(src.encode(), dst.encode(), None, (1 << 12) | (1 << 14), None) != 0:  # MS_BIND|MS_REC
                    raise OSError(ctypes.get_errno(), f"bind {src}")
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
        for lim, val in ((resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu_seconds),
                         (resource.RLIMIT_FSIZE, max_file_mb << 20), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NOFILE, 256)):
            resource.setrlimit(lim, (val, val))
    return apply


def _feed(fd, data):
    try:
        while data:
            data = data[os.write(fd, data[:65536]):]
    except OSError:  # the child closed stdin or died: nothing more to say
        pass
    finally:
        os.close(fd)


def _communicate(proc, data, timeout, cap, out_cap=None):
    """Feed stdin, read stdout/stderr (the first `cap` bytes of each; of stdout `out_cap` when given) until EOF or the
    deadline; then kill the whole process group. -> (out, err, timed_out)."""
    writer = threading.Thread(target=_feed, args=(os.dup(proc.stdin.fileno()), data), daemon=True)
    proc.stdin.close()
    writer.start()
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    caps = {proc.stdout: out_cap or cap, proc.stderr: cap}
    sel, deadline, timed_out = selectors.DefaultSelector(), time.monotonic() + timeout, False
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0 and not timed_out:
            timed_out, deadline = True, time.monotonic() + 2  # killed below; collect what is left for 2 s more
            _kill(proc)
            continue
        if left <= 0:
            break
        for key, _ in sel.select(left):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            b = bufs[key.fileobj]
            b += chunk[:max(0, caps[key.fileobj] - len(b))]  # beyond the cap: drained and dropped (never blocks)
    sel.close()
    _kill(proc)
    proc.wait()
    writer.join(1)
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap and its PID-namespace init: the namespace dies with them
    except (ProcessLookupError, PermissionError):
        pass


def _command(mode, hook, max_procs, disk_mb, unsafe):
    """-> (argv, stage, staging dir to remove, descriptors to pass) for a sandboxed run, or a plain child for
    unsafe=True. The one descriptor passed is the filter's (the caller closes it after starting the child)."""
    py = [sys.executable, "-I", "-B", "-X", "utf8", "-c", PROGRAM, mode, "1" if hook else "0", str(max_procs)]
    if unsafe:  # a plain child in a throwaway working directory
        return py, None, tempfile.mkdtemp(prefix="sandbox-unsafe-"), ()
    dirs = _python_dirs()
    if os.geteuid() != 0:
        fd = filter_fd()
        return _bwrap_args(dirs, dirs, disk_mb, seccomp_fd=fd) + py, None, None, () if fd is None else (fd,)
    stage_dir = tempfile.mkdtemp(prefix="sandbox-py-")  # root: bind each directory here, where 65534 can reach
    os.chmod(stage_dir, 0o755)
    binds = [(d, os.path.join(stage_dir, str(i))) for i, d in enumerate(dirs)]
    writable = {d: os.path.join(stage_dir, name) for d, name in (("/tmp", "tmp"), ("/dev/shm", "shm"))}
    caps = _tmpfs_caps(disk_mb)
    for s in [s for _, s in binds] + list(writable.values()):
        os.mkdir(s)
    stage = _Stage(binds, [(writable[d], size, inodes) for d, (size, inodes) in caps.items()])
    fd = filter_fd()  # last: nothing after it can fail and leak it
    return (_bwrap_args([s for _, s in binds], dirs, disk_mb, writable, fd) + py, stage, stage_dir,
            () if fd is None else (fd,))


def _run(mode, program, tests, token, stdin, timeout, memory_mb, max_procs, max_output, max_file_mb, disk_mb,
         unsafe, hook, check=True, record_cap=None):
    t0 = time.time()
    if check:
        ok, why = available()
        if not ok and not unsafe:
            return Result(False, -1, "", why, False, 0.0, executed=False, reason=why)
        unsafe = not ok  # with a sandbox at hand, unsafe=True changes nothing
    else:
        unsafe = False
    enc = lambda s: s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)
    parts = [enc(program), enc(tests), enc(token)]
    data = " ".join(str(len(p)) for p in parts).encode() + b"\n" + b"".join(parts) + enc(stdin)
    stage_dir, fds = None, ()
    try:
        argv, stage, stage_dir, fds = _command(mode, hook, max_procs, disk_mb, unsafe)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    close_fds=True, pass_fds=fds, start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin"}, cwd=stage_dir if unsafe else None,
                                    preexec_fn=_preexec(memory_mb, int(timeout) + 1, max_file_mb, stage))
        finally:
            for fd in fds:  # the child holds its own copy of the filter's pipe
                os.close(fd)
        out, err, timed_out = _communicate(proc, data, timeout, max_output, record_cap)
    except (OSError, subprocess.SubprocessError) as e:  # the sandbox could not start: a failed sample
        return Result(False, -1, "", f"sandbox: {e}", False, time.time() - t0, executed=False, reason=str(e))
    finally:
        if stage_dir:
            shutil.rmtree(stage_dir, ignore_errors=True)
    dec = lambda b: b.decode("utf-8", "replace")
    rc = proc.returncode
    ok = rc == 0 and not timed_out
    if mode == "tests":  # stdout carries the harness's records: run_tests decides on them
        return Result(ok, rc, "", dec(err), timed_out, time.time() - t0, records=out)
    return Result(ok, rc, dec(out), dec(err), timed_out, time.time() - t0)


@lru_cache(maxsize=1)
def available():
    """-> (True, "") when generated code can run behind bubblewrap here, else (False, one-line reason)."""
    if not sys.platform.startswith("linux"):
        return False, f"no sandbox on {sys.platform}: generated code is not run (pass --unsafe-exec to run it anyway)"
    if not shutil.which("bwrap"):
        return False, "bubblewrap is not installed (apt-get install bubblewrap): generated code is not run"
    r = _run("run", "print(6 * 7)", "", "", "", 20, 1024, 16, 1000, 1, 1, False, True, check=False)
    if r.stdout != "42\n":
        err = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"bubblewrap cannot start a sandbox here ({err}); generated code is not run"
    return True, ""


def run_python(code, timeout=10.0, memory_mb=1024, max_procs=16, max_output=20_000, max_file_mb=16, disk_mb=64,
               stdin="", unsafe=False, hook=True):
    """Run `code` as a Python program in the sandbox. Never raises for anything the code does."""
    return _run("run", code, "", "", stdin, timeout, memory_mb, max_procs, max_output, max_file_mb, disk_mb, unsafe,
                hook)


CASE_SLACK = 3.0  # seconds the whole run may take beyond its cases' limits (starting the sandbox, the interpreter)
RUN_CAP = 300.0   # seconds one run may hold a sandbox at most, however many cases it has (HumanEval+ has up to 1,108:
                  # their limits add up to 3 hours); each case's own alarm stops ordinary code long before, so the
                  # cap only ends code that blocks the alarm
RECORD_CAP = 64 << 20  # bytes of returned values one run may send back (the largest canonical run sends far less)


# ---- the verdict, decided here: test plans, returned data, comparisons --------------------------------------

# What the parent may evaluate around a returned value: the benchmark's own comparison, on plain data only
SAFE = {n: getattr(builtins, n) for n in ("abs", "all", "any", "bool", "dict", "float", "frozenset", "int",
                                          "isinstance", "len", "list", "max", "min", "round", "set", "sorted", "str",
                                          "sum", "tuple", "zip", "enumerate", "reversed", "complex")}
SAFE["math"] = math
SAFE_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Constant, ast.List, ast.Tuple,
              ast.Set, ast.Dict, ast.Name, ast.Load, ast.Store, ast.Call, ast.keyword, ast.Attribute, ast.Subscript,
              ast.Slice, ast.GeneratorExp, ast.ListComp, ast.comprehension, ast.IfExp, ast.boolop, ast.unaryop,
              ast.cmpop, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
MATH_OK = {"isclose", "fabs", "floor", "ceil", "sqrt", "inf", "nan", "pi", "e", "isnan", "isinf", "isfinite", "trunc"}
LIFT = {"list", "tuple", "set", "frozenset", "sorted", "dict", "str", "len", "bool", "int", "float", "round"}
# EvalPlus's `assertion(out, exp, atol)` comes in these forms (ast.unparse of the def); any other: a fallback
_EP_CORE = ("    if atol == 0 and is_floats(exp):\n        atol = 1e-06\n{set}    if {cond} and atol != 0:\n"
            "        assert np.allclose(out, exp, rtol=1e-07, atol=atol)\n    else:\n        assert {ok}")
EVALPLUS_ASSERTIONS = {
    "def assertion(out, exp, atol):\n    exact_match = out == exp\n" + _EP_CORE.format(
        set="", cond="not exact_match", ok="exact_match"): "exact",
    "def assertion(out, exp, atol):\n" + _EP_CORE.format(
        set="", cond="out != exp", ok="out == exp, f'out: {out}, exp: {exp}'"): "exact",
    "def assertion(out, exp, atol):\n" + _EP_CORE.format(
        set="    out = set(out)\n    exp = set(exp)\n", cond="out != exp",
        ok="out == exp, f'out: {out}, exp: {exp}'"): "set",
    # MBPP+ 737, 787, 794: computes a match and asserts nothing; only the call has to complete
    "def assertion(out, exp, atol):\n    if isinstance(out, bool):\n        exact_match = out == exp\n    else:\n"
    "        exact_match = exp == (out is not None)": "none"}
PLAIN = "__recursivemas_plain__"  # the harness's converter to builtin types, wrapped around calls in fallback asserts


@dataclass
class Plan:
    """Tests, split: `steps` run in the sandbox ([kind, source, name, new part]; kind exec | call | check), `checks`
    are decided here ([step index, kind, *args]). A `call` step returns its value as data; `check` steps are the
    assert forms that could not be split (the fallback), run in the sandbox on plain-data copies."""
    steps: list
    checks: list
    parts: int
    split: int = 0       # asserts decided here
    fallback: int = 0    # asserts run in the sandbox
    fallback_forms: list = None


class _Planner:
    def __init__(self, solution_names=()):
        self.steps, self.checks, self.split, self.fallback, self.forms = [], [], 0, 0, []
        self.env = {}                     # name -> ("lit", value) | ("step", i): what this side knows
        self.test_defined = set()         # functions, classes and imports of the tests (not the solution's)
        self.checkfns, self.new = {}, False
        self.unknown = set()              # names the tests bind to values this side does not know
        self.assertion_kind = None        # the tests' own EvalPlus `assertion`, when it is a known form
        self.solution_names = set(solution_names)  # names the solution defines that are builtins too (MBPP's `sum`)

    def step(self, kind, src, name=None):
        self.steps.append([kind, src, name, self.new])
        self.new = False
        return len(self.steps) - 1

    def part(self):
        self.new = True

    def is_solution(self, name):
        return name in self.solution_names or (name not in self.test_defined and name not in builtins.__dict__
                                               and name != PLAIN)

    def literal(self, node):
        """ast.literal_eval, also reading `inf` and `nan` when the tests imported them (`from math import inf`)."""
        try:
            return ast.literal_eval(node)
        except ValueError:
            names = {x.id for x in ast.walk(node) if isinstance(x, ast.Name)}
            if not names or not names <= {"inf", "nan"} & self.test_defined:
                raise

        class Floats(ast.NodeTransformer):
            def visit_Name(self, x):
                return ast.Constant(float(x.id))
        return ast.literal_eval(Floats().visit(ast.parse(ast.unparse(node), mode="eval").body))

    def solution_calls(self, node):
        return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                and self.is_solution(n.func.id)]

    def statement(self, n):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            self.test_defined |= {(a.asname or a.name).split(".")[0] for a in n.names}
            for a in n.names:
                self.env.pop((a.asname or a.name).split(".")[0], None)
            self.step("exec", ast.unparse(n))
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            self.test_defined.add(n.name)
            self.env.pop(n.name, None)
            self.unknown.add(n.name)
            if n.name == "assertion":
                self.assertion_kind = EVALPLUS_ASSERTIONS.get(ast.unparse(n))
            if (isinstance(n, ast.FunctionDef) and len(n.args.args) == 1 and not n.args.vararg
                    and not any(isinstance(x, ast.Return) for x in ast.walk(n))):
                self.checkfns[n.name] = n
            self.step("exec", ast.unparse(n))
        elif (isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
              and n.value.func.id in self.checkfns and len(n.value.args) == 1 and not n.value.keywords):
            fn = self.checkfns[n.value.func.id]  # check(f): `candidate = f`, then check's statements
            self.assign(ast.parse(f"{fn.args.args[0].arg} = {ast.unparse(n.value.args[0])}").body[0])
            self.block(fn.body)
        elif isinstance(n, ast.Assign):
            self.assign(n)
        elif isinstance(n, ast.Assert):
            self.assertion(n)
        elif isinstance(n, ast.For) and (self.evalplus_loop(n) or self.unrolled(n) or self.fallback_loop(n)):
            pass
        elif isinstance(n, ast.Pass) or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)):
            pass
        else:
            self.fallback_stmt(n)

    def block(self, stmts):
        for n in stmts:
            self.statement(n)

    def assign(self, n):
        names = [t.id for t in n.targets if isinstance(t, ast.Name)]
        simple = len(n.targets) == 1 and len(names) == 1
        if isinstance(n.value, ast.Lambda):
            self.test_defined |= set(names)
        if simple and not self.solution_calls(n.value):
            try:
                self.env[names[0]] = ("lit", self.literal(n.value))
                self.steps.append(["lazy", n, names[0], self.new])  # sent only if the sandbox needs it
                self.new = False
                return
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
        for t in n.targets:
            for x in ast.walk(t):
                if isinstance(x, ast.Name):
                    self.env.pop(x.id, None)
                    self.unknown.add(x.id)
        if simple and self.solution_calls(n.value):  # x = f(...): its value comes back as data
            i = self.step("call", ast.unparse(n.value), names[0])
            self.env[names[0]] = ("step", i)
        else:
            self.step("exec", ast.unparse(n))

    def lifted(self, node):
        """`list(f(x))`, `set(f(x))`, `sorted(f(x))`, `round(f(x), 2)`: the conversion runs in the sandbox with the
        call (a generator or a map object is not data; its list is), which changes nothing the parent relies on."""
        return (isinstance(node.func, ast.Name) and node.func.id in LIFT and node.args
                and isinstance(node.args[0], ast.Call) and isinstance(node.args[0].func, ast.Name)
                and self.is_solution(node.args[0].func.id)
                and all(isinstance(a, ast.Constant) for a in node.args[1:] + [k.value for k in node.keywords]))

    def residual(self, expr):
        """The assert's expression with each outermost solution call replaced by a placeholder, or None when what
        is left is more than a comparison of data."""
        calls = []
        planner = self

        class Swap(ast.NodeTransformer):
            def visit_Call(self, node):
                if isinstance(node.func, ast.Name) and planner.is_solution(node.func.id) or planner.lifted(node):
                    calls.append(node)
                    return ast.Name(f"_v{len(calls) - 1}", ast.Load())
                self.generic_visit(node)
                return node
        rest = Swap().visit(ast.Expression(ast.parse(ast.unparse(expr), mode="eval").body))
        bound = {f"_v{i}" for i in range(len(calls))}
        bound |= {x.id for c in ast.walk(rest) if isinstance(c, ast.comprehension) for x in ast.walk(c.target)
                  if isinstance(x, ast.Name)}
        free = set()
        for x in ast.walk(rest):
            if not isinstance(x, SAFE_NODES):
                return None
            if isinstance(x, ast.Attribute) and not (isinstance(x.value, ast.Name) and x.value.id == "math"
                                                     and x.attr in MATH_OK):
                return None
            if isinstance(x, ast.Call) and not (isinstance(x.func, ast.Attribute) or
                                                (isinstance(x.func, ast.Name) and x.func.id in SAFE)):
                return None
            if isinstance(x, ast.Name) and x.id not in bound:
                if x.id in self.env:
                    free.add(x.id)
                elif x.id in self.unknown or x.id not in SAFE:  # `str = ''.join(...)` shadows the builtin
                    return None
        if not calls and not any(self.env[x][0] == "step" for x in free):
            return None  # nothing the solution returned is in it
        return rest, calls, free

    def assertion(self, n):
        if not self.solution_calls(n.test):
            try:  # `assert True, "..."`: nothing of the solution's to check
                if ast.literal_eval(n.test):
                    return
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
        got = self.residual(n.test)
        if got is None:
            return self.fallback_stmt(n)
        rest, calls, free = got
        env = {f"_v{k}": ("step", self.step("call", ast.unparse(c))) for k, c in enumerate(calls)}
        env.update({x: self.env[x] for x in free})
        self.checks.append(["expr", ast.unparse(rest), env])
        self.split += 1

    def evalplus_loop(self, n):
        """EvalPlus: `for i, (inp, exp) in enumerate(zip(inputs, results)): assertion(f(*inp), exp, atol)` over
        literal lists; the inputs go to the sandbox, the expected outputs stay here."""
        try:
            it, body = n.iter, n.body
            if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "enumerate":
                it, tgt = it.args[0], n.target.elts[1]
            else:
                tgt = n.target
            assert isinstance(it, ast.Call) and it.func.id == "zip" and len(it.args) == 2
            ins, outs = (a.id for a in it.args)
            inp, exp = (t.id for t in tgt.elts)
            call = body[0].value
            assert len(body) == 1 and isinstance(body[0], ast.Expr) and call.func.id == "assertion"
            f, e, atol = call.args
            assert (isinstance(f, ast.Call) and f.func.id not in self.test_defined and len(f.args) == 1
                    and isinstance(f.args[0], ast.Starred) and f.args[0].value.id == inp and not f.keywords)
            assert isinstance(e, ast.Name) and e.id == exp and isinstance(atol, ast.Constant)
            assert self.assertion_kind is not None
            inputs, results = self.env[ins][1], self.env[outs][1]
        except (AssertionError, AttributeError, IndexError, KeyError, TypeError, ValueError):
            return False
        for j in range(min(len(inputs), len(results))):
            self.part()
            # a form that asserts nothing needs no data back: named, its value may be any object (see _main)
            i = self.step("call", f"{f.func.id}(*{ins}[{j}])", "_out" if self.assertion_kind == "none" else None)
            self.checks.append(["evalplus", {"_v": ("step", i)}, results[j], atol.value, self.assertion_kind])
            self.split += 1
        return True

    def unrolled(self, n, most=1000):
        """A `for` over a literal list, a known literal name or range(constants), with plain names as its target:
        unrolled, so its asserts are split too; left whole (False) when any of them would be a fallback."""
        if n.orelse or any(isinstance(x, (ast.Break, ast.Continue, ast.Return)) for x in ast.walk(n)):
            return False
        it = n.iter
        try:
            if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range":
                values = list(range(*[ast.literal_eval(a) for a in it.args]))
            elif isinstance(it, ast.Name) and self.env.get(it.id, ("",))[0] == "lit":
                values = list(self.env[it.id][1])
            else:
                values = list(ast.literal_eval(it))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return False
        if len(values) > most or not all(isinstance(x, (ast.Name, ast.Tuple, ast.List, ast.Store))
                                         for x in ast.walk(n.target)):
            return False
        saved = (len(self.steps), len(self.checks), self.split, self.fallback, len(self.forms), dict(self.env),
                 set(self.test_defined), self.new, set(self.unknown))
        for v in values:
            src = f"{ast.unparse(n.target)} = {v!r}"
            try:
                ast.parse(src)
                if ast.literal_eval(repr(v)) != v:
                    raise ValueError
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                ok = False
                break
            bound = {}
            try:
                _destructure(n.target, v, bound)
            except (TypeError, ValueError):
                ok = False
                break
            for k, x in bound.items():  # one assignment per name: a name nothing in the sandbox reads stays here
                self.env[k] = ("lit", x)
                self.steps.append(["lazy", f"{k} = {x!r}", k, self.new])
                self.new = False
            fallback = self.fallback
            self.block(n.body)
            ok = self.fallback == fallback
            if not ok:
                break
        else:
            return True
        del self.steps[saved[0]:], self.checks[saved[1]:], self.forms[saved[4]:]
        self.split, self.fallback, self.env, self.test_defined, self.new, self.unknown = saved[2], saved[3], \
            saved[5], saved[6], saved[7], saved[8]
        return False

    def fallback_loop(self, n):
        """A fallback `for` over literal lists (EvalPlus's `for i, inp in enumerate(inputs): assertion(f(*inp),
        ref_func(*inp), 0)`): one fallback step, with its own time limit, per input."""
        it = n.iter.args[0] if (isinstance(n.iter, ast.Call) and isinstance(n.iter.func, ast.Name)
                                and n.iter.func.id == "enumerate" and len(n.iter.args) == 1) else n.iter
        names = it.args if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "zip" else [it]
        if (n.orelse or any(isinstance(x, (ast.Break, ast.Continue)) for x in ast.walk(n)) or not names
                or not all(isinstance(x, ast.Name) and self.env.get(x.id, ("",))[0] == "lit" for x in names)):
            return False
        k = min(len(self.env[x.id][1]) for x in names)
        cases = f"_cases_{len(self.steps)}"
        self.step("exec", f"{cases} = list({ast.unparse(n.iter)})")
        body = ast.parse("\n".join(ast.unparse(b) for b in n.body)).body
        for j in range(k):
            self.part()
            head = ast.parse(f"{ast.unparse(n.target)} = {cases}[{j}]").body
            self.fallback_stmt(ast.Module(head + body, []), form=ast.unparse(n).split("\n")[0][:120])
        return True

    def fallback_stmt(self, n, form=None):
        class Wrap(ast.NodeTransformer):
            def visit_Call(s, node):
                s.generic_visit(node)
                if isinstance(node.func, ast.Name) and self.is_solution(node.func.id):
                    return ast.Call(ast.Name(PLAIN, ast.Load()), [node], [])
                return node
        has_assert = any(isinstance(x, ast.Assert) for x in ast.walk(n)) or self.solution_calls(n)
        src = ast.unparse(ast.fix_missing_locations(Wrap().visit(ast.parse(ast.unparse(n)))))
        i = self.step("check" if has_assert else "exec", src)
        if has_assert:
            self.checks.append(["ok", i])
            self.fallback += 1
            self.forms.append(form or ast.unparse(n).split("\n")[0][:120])
        for x in ast.walk(n):  # whatever it binds is unknown here now
            if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Store):
                self.env.pop(x.id, None)
                self.unknown.add(x.id)

    def finish(self):
        """Drop the literal assignments nothing in the sandbox reads (expected outputs stay here)."""
        used = set()
        for kind, src, name, new in self.steps:
            if kind != "lazy":
                used |= {x.id for x in ast.walk(ast.parse(src)) if isinstance(x, ast.Name)}
        keep, index = [], {}
        for i, (kind, src, name, new) in enumerate(self.steps):
            if kind == "lazy" and name not in used:
                if new and i + 1 < len(self.steps):
                    self.steps[i + 1][3] = True
                continue
            index[i] = len(keep)
            src = src if isinstance(src, str) else ast.unparse(src)
            keep.append(["exec" if kind == "lazy" else kind, src, None if kind == "lazy" else name, new])
        fix = lambda env: {k: (("step", index[v[1]]) if v[0] == "step" else v) for k, v in env.items()}
        checks = []
        for c in self.checks:
            if c[0] == "expr":
                checks.append(["expr", c[1], fix(c[2])])
            elif c[0] == "evalplus":
                checks.append(["evalplus", fix(c[1]), c[2], c[3], c[4]])
            else:
                checks.append(["ok", index[c[1]]])
        if keep and not any(s[3] for s in keep[:1]):
            keep[0][3] = True
        return Plan(keep, checks, max(1, sum(s[3] for s in keep)), self.split, self.fallback, self.forms)


def _destructure(target, value, out):
    if isinstance(target, ast.Name):
        out[target.id] = value
        return
    value = list(value)
    if len(value) != len(target.elts):
        raise ValueError("cannot unpack")
    for t, v in zip(target.elts, value):
        _destructure(t, v, out)


def plan_tests(tests, per_statement=False, solution_names=()):
    """Assert-style tests -> a Plan. `tests`: one source (one time limit for all of it, or, with per_statement, one
    per top-level statement and per EvalPlus input) or a list of sources (one time limit each). Each `assert` whose
    expression is the benchmark's comparison around calls of the solution (`f(x) == y`, `abs(f(x) - y) < 1e-6`,
    `math.isclose(f(x), y)`, `set(f(x)) == set(y)`, `not f(x)`) is split: the call runs in the sandbox, the
    comparison here; any other assert form is a fallback, run in the sandbox (see Plan). `solution_names`: names the
    solution defines that shadow a builtin (a test calling `sum(10, 15)` means the solution's `sum`)."""
    p = _Planner(solution_names)
    sources = [tests] if isinstance(tests, str) else list(tests)
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            p.part()
            p.step("exec", src)  # fails to compile in the sandbox: a failed sample
            continue
        if per_statement:
            for n in tree.body:
                p.part()
                p.statement(n)
        else:
            p.part()
            p.block(tree.body)
    return p.finish()


def _decode(x):
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


def run_tests(program, tests, timeout=10.0, unsafe=False, hook=True, **limits):
    """Score `program` against `tests`: a Plan (plan_tests, LiveCodeBench's lcb_plan), one source of assert
    statements, or a list of sources (each its own time limit). The sandbox gets the program and the test inputs,
    never the expected outputs: it runs the program, then each step, and sends back each call's value as data
    (builtin types only: an object of any other class is a failed case); the comparisons are made here, so nothing
    the program does in its process (exiting early, reading its own memory, an always-equal object, patching
    `math.isclose` or `sys.exit`) can pass a wrong answer. Assert forms that cannot be split run in the sandbox
    on plain-data copies with the standard modules restored, and report with a fresh token (Plan.fallback counts
    them). `timeout` is per part: the program's own run and then each part get `timeout` seconds each (a part past
    it fails the sample); the whole run is killed after the sum of those limits plus CASE_SLACK, or after RUN_CAP
    seconds if that comes first."""
    plan = tests if isinstance(tests, Plan) else plan_tests(tests)
    token = secrets.token_hex(16)
    kw = dict(memory_mb=1024, max_procs=16, max_output=20_000, max_file_mb=16, disk_mb=64) | limits
    payload = json.dumps({"limit": float(timeout), "steps": plan.steps})
    whole = min(timeout * (plan.parts + 1) + CASE_SLACK, RUN_CAP)
    r = _run("tests", program, payload, token, "", whole, kw["memory_mb"],
             kw["max_procs"], kw["max_output"], kw["max_file_mb"], kw["disk_mb"], unsafe, hook,
             record_cap=RECORD_CAP)
    r.timed_out = r.timed_out or (r.returncode == 124 and "s limit" in r.stderr)  # a part past its own limit
    if r.executed:
        if len(r.records) >= RECORD_CAP:
            r.passed, r.detail = False, f"the returned values exceed {RECORD_CAP >> 20} MB"
        else:
            r.passed, r.detail = verdict(plan, r.records, token)
        if r.timed_out:
            r.passed, r.detail = False, "a part ran past its time limit"
    r.records = b""
    return r

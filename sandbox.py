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

Scoring (run_tests) runs the process side here: the tests split into a Plan (planner.py), the sandbox gets the solution
and the test inputs only and sends back each call's value as plain data, and the verdict is decided outside the code
under test (verdict.py). Time limits: each part its own (in the harness), the whole run the sum of those plus
CASE_SLACK, at most RUN_CAP; returned values at most RECORD_CAP bytes.

    run_python("print(1 + 1)")                           # -> Result(ok=True, stdout='2\\n', executed=True, ...)
    run_tests(solution_code, test_code).passed           # scoring: see run_tests
"""
import ctypes
import json
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
from planner import plan_tests
from seccomp import DENIED, filter_fd
from verdict import Plan, verdict

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


# ---- scoring: run_tests' process side; the plan comes from planner.py, the verdict from verdict.py --------------

CASE_SLACK = 3.0  # seconds the whole run may take beyond its cases' limits (starting the sandbox, the interpreter)
RUN_CAP = 300.0   # seconds one run may hold a sandbox at most, however many cases it has (HumanEval+ has up to 1,108:
                  # their limits add up to 3 hours); each case's own alarm stops ordinary code long before, so the
                  # cap only ends code that blocks the alarm
RECORD_CAP = 64 << 20  # bytes of returned values one run may send back (the largest canonical run sends far less)


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

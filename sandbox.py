"""
Run untrusted, model-generated Python behind an operating-system boundary (bubblewrap), never in our process.

What the code sees (`bwrap --unshare-all`): fresh user, mount, PID, network, IPC, UTS and cgroup namespaces; uid/gid
65534 (when we are root, bubblewrap itself runs as uid 65534 too, so the code owns no file on the host); the system
directories and exactly the Python directories it needs, read-only; a private /proc (only its own processes), a
minimal read-only /dev, and two writable places, tmpfs at /tmp (its working directory) and /dev/shm, sharing one
disk budget (and, as root, capped in inodes). Its own empty session keyring, and a system-call filter (seccomp,
DENIED below, loaded by bubblewrap). No network interface but its own loopback, no inherited file descriptors, an
empty environment. Limits: wall clock (the whole PID namespace is killed), CPU time, address space and file size per
process, process count (RLIMIT_NPROC inside its own user namespace), total disk (the tmpfs sizes). Output comes back
through pipes, capped, decoded with replacement.

Where bubblewrap or user namespaces are missing, code is NOT run: the Result says `executed=False` and why, unless
the caller passes `unsafe=True` (a plain child process with rlimits only: unsafe, for trusted code).

A second, in-process layer (an audit hook, `hook=True`) refuses process creation, sockets, signals, ctypes and
frame introspection; the OS boundary does not rely on it.

    run_python("print(1 + 1)")                           # -> Result(ok=True, stdout='2\\n', executed=True, ...)
    run_tests(solution_code, test_code).passed           # scoring: see run_tests
"""
import ctypes
import os
import platform
import resource
import secrets
import selectors
import shutil
import signal
import site
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

NOBODY = 65534
PRELUDE = r'''
import os, sys, builtins, resource, signal, time, types, enum, typing, collections, functools, re
def _hook(token, frame, tests):
    getframe, write, fspath, busy, done = sys._getframe, os.write, os.fspath, [False], [False]
    VE, PE, IE, S, B = ValueError, PermissionError, ImportError, str, bytes
    DENY = frozenset({"os.fork", "os.forkpty", "os.system", "os.posix_spawn", "os.spawn", "os.exec", "os.kill",
        "os.killpg", "subprocess.Popen", "pty.spawn", "signal.pthread_kill", "socket.connect", "socket.bind",
        "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "sys._current_frames", "sys.settrace",
        "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.symlink"} |
        ({"_thread.start_new_thread"} if tests else set()))
    FRAMES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_locals", "f_globals"})
    def hook(event, args):
        if event == "sys._getframe":
            if busy[0]:
                return
            raise VE("sandbox: frame access is off")
        if event == "recursivemas.finish":  # only the harness's own frame may reveal the token, once
            busy[0] = True
            try:
                caller = getframe(1)
            finally:
                busy[0] = False
            if caller is frame and token and not done[0]:
                done[0] = True
                write(1, b"\n" + token + b"\n")
            return
        if event in DENY:
            raise PE(f"sandbox: {event} is not allowed")
        if event == "ctypes.dlopen":
            raise IE("sandbox: ctypes is not available")
        if event == "object.__getattr__" and args[1] in FRAMES:
            raise PE("sandbox: frame access is off")
        if tests and event == "object.__setattr__" and args[1] == "__code__":
            raise PE("sandbox: replacing code is not allowed")
        if tests and event == "open" and type(args[0]) is not int:
            p = fspath(args[0])
            if (p.decode("latin-1") if type(p) is B else S(p)).find("proc") >= 0:
                raise PE("sandbox: /proc is not readable here")
    sys.addaudithook(hook)
def _take(n, read):
    buf = b""
    while len(buf) < n and (c := read(0, n - len(buf))):
        buf += c
    return buf
def _main(mode, hook, nproc):
    read, frame = os.read, sys._getframe()
    head = b""
    while not head.endswith(b"\n"):
        c = read(0, 1)
        if not c:
            break
        head += c
    src, tests, token = [_take(int(n), read) for n in head.split()]
    del head, c  # the token lives only in `token` now, and that goes once the hook holds it
    if mode == "tests":  # nothing of the program may read the token or the tests from stdin
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))  # counted in our own user namespace
    first = compile(src, "<program>", "exec")
    limit, cases = 0.0, []
    if mode == "tests":  # tests = b"<seconds per case>\0<case 1>\0<case 2>..." (source code holds no NUL byte)
        limit, *cases = tests.split(b"\0")
        limit = float(limit)
        cases = [compile(c, f"<test case {i}>", "exec") for i, c in enumerate(cases, 1)]  # all compiled up front
    if hook:
        _hook(token, frame, mode == "tests")
    del token
    run, audit, flush, fresh, out = exec, sys.audit, sys.stdout.flush, dict(builtins.__dict__), sys.stdout
    clock, timer, write, leave = time.monotonic, signal.setitimer, os.write, os._exit
    def expired(what):  # a case past its limit fails the sample: exit status 124, no token
        write(2, f"\nsandbox: {what} ran past its {limit:g} s limit\n".encode())
        leave(124)
    part = ["the program"]
    if mode == "tests":  # each part (the program, then each test case) gets its own `limit` seconds
        signal.signal(signal.SIGALRM, lambda *_: expired(part[0]))
    ns = {"__name__": "__main__", "__builtins__": builtins}
    for i, code in enumerate([first] + cases):
        if i == 1:
            ns["__builtins__"] = fresh  # the tests see the builtins as they were before the program ran
        part[0] = f"test case {i}" if i else "the program"
        if limit:
            timer(signal.ITIMER_REAL, limit)
        t0 = clock()
        run(code, ns)
        if limit:
            timer(signal.ITIMER_REAL, 0)
            if clock() - t0 > limit:  # a program that caught or blocked the alarm
                expired(part[0])
    if mode == "tests":
        flush()
        audit("recursivemas.finish")
_main(sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]))
'''


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
    passed: bool = False    # run_tests only: every test ran and the harness's final statement was reached


# ---- the system-call filter (seccomp), a small fixed classic-BPF program that bubblewrap loads (--seccomp FD) ----
# System-call numbers: Linux uapi tables, arch/x86/entry/syscalls/syscall_64.tbl (x86_64) and
# include/uapi/asm-generic/unistd.h (aarch64); audit arch values: include/uapi/linux/audit.h.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # EM_X86_64 / EM_AARCH64 | __AUDIT_ARCH_64BIT | _LE
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: the same arch value, syscall numbers with this bit set
DENIED = {  # name: (x86_64, aarch64, why it is refused)
    "keyctl": (250, 219, "kernel keyrings: the parent's session keyring and the user's keyrings are reached this way"),
    "add_key": (248, 217, "kernel keyrings: adds keys (and kernel memory) to a keyring"),
    "request_key": (249, 218, "kernel keyrings: searches the keyrings, may call out to a host helper"),
    "ptrace": (101, 117, "tracing a process: bubblewrap's PID 1 or a sibling, reading or changing its memory"),
    "process_vm_readv": (310, 270, "reads another process's memory"),
    "process_vm_writev": (311, 271, "writes another process's memory"),
    "pidfd_getfd": (438, 438, "takes a file descriptor out of another process"),
    "kcmp": (312, 272, "compares kernel objects of two processes: kernel-pointer ordering, a ptrace-class probe"),
    "io_uring_setup": (425, 425, "io_uring: a second system-call path this filter does not see, and a large attack "
                                 "surface"),
    "io_uring_enter": (426, 426, "io_uring: as io_uring_setup"),
    "io_uring_register": (427, 427, "io_uring: as io_uring_setup"),
    "userfaultfd": (323, 282, "stalls page faults inside the kernel at will: the usual tool to win kernel races"),
    "bpf": (321, 280, "eBPF programs and maps in the kernel"),
    "perf_event_open": (298, 241, "performance counters: side channels and a long record of kernel bugs"),
    "mount": (165, 40, "changes the file-system layout bubblewrap built"),
    "umount2": (166, 39, "uncovers what bubblewrap's mounts hide"),
    "pivot_root": (155, 41, "changes the root bubblewrap set"),
    "open_tree": (428, 428, "the new mount API: as mount"),
    "move_mount": (429, 429, "the new mount API: as mount"),
    "fsopen": (430, 430, "the new mount API: as mount"),
    "fsconfig": (431, 431, "the new mount API: as mount"),
    "fsmount": (432, 432, "the new mount API: as mount"),
    "fspick": (433, 433, "the new mount API: reconfigures an existing mount"),
    "mount_setattr": (442, 442, "changes a mount's flags (read-only, nosuid)"),
    "unshare": (272, 97, "new namespaces (bubblewrap already refuses user namespaces: --disable-userns)"),
    "setns": (308, 268, "joins another namespace"),
    "kexec_load": (246, 104, "loads a new kernel"),
    "kexec_file_load": (320, 294, "loads a new kernel"),
    "init_module": (175, 105, "loads a kernel module"),
    "finit_module": (313, 273, "loads a kernel module"),
    "delete_module": (176, 106, "unloads a kernel module"),
    "memfd_create": (319, 279, "anonymous files outside every limit (not the address space, not the tmpfs size): "
                               "refused, not bounded, since only a memory cgroup could bound them"),
    "memfd_secret": (447, 447, "as memfd_create, and its pages are locked out of the kernel's reach"),
    "shmget": (29, 194, "System V shared memory outlives its mapping, so the address-space limit does not bound it"),
    "msgget": (68, 186, "System V message queues: kernel memory outside every limit (32,000 queues of 16 KB)"),
    "syslog": (103, 116, "the kernel log (readable without privileges where dmesg_restrict is 0)"),
}
EPERM = 1
_RET_ERRNO, _RET_ALLOW = 0x00050000, 0x7FFF0000                     # include/uapi/linux/seccomp.h
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06          # include/uapi/linux/bpf_common.h combinations
FILTER = True  # tests turn it off to show that each probe would reach the kernel without it


def seccomp_program(arch=None):
    """The filter as bytes (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k, native byte order), or None for an
    architecture without a table here. A foreign audit arch (32-bit entry on x86_64) and x32 numbers get EPERM, the
    DENIED calls get EPERM, everything else is allowed.
        0: A = seccomp_data.arch         1: A == ARCH ? skip 1 : next     2: return EPERM
        3: A = seccomp_data.nr         [ 4: A >= X32 bit ? next : skip 1   5: return EPERM ]   x86_64 only
        n: A == denied[i] ? jump to the final `return EPERM` : next ...    then `return ALLOW`, `return EPERM`."""
    arch = arch or platform.machine()
    if arch not in AUDIT_ARCH:
        return None
    col = 0 if arch == "x86_64" else 1
    nrs = sorted({v[col] for v in DENIED.values()})
    deny = _RET_ERRNO | EPERM
    ins = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, AUDIT_ARCH[arch]), (_RET_K, 0, 0, deny), (_LD_W_ABS, 0, 0, 0)]
    if arch == "x86_64":
        ins += [(_JGE_K, 0, 1, X32_SYSCALL_BIT), (_RET_K, 0, 0, deny)]
    ins += [(_JEQ_K, len(nrs) - i, 0, nr) for i, nr in enumerate(nrs)]  # jt: over the rest and the ALLOW
    ins += [(_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, deny)]
    return b"".join(struct.pack("=HBBI", *i) for i in ins)


def _filter_fd():
    """A pipe's read end holding the program, for bubblewrap's --seccomp (it reads to EOF); None without a table."""
    prog = seccomp_program() if FILTER else None
    if prog is None:
        return None
    r, w = os.pipe()  # the program is far below a pipe's 64 KB buffer, so this write never blocks
    os.write(w, prog)
    os.close(w)
    return r


# ---- writable mounts: /tmp and /dev/shm share disk_mb; inodes capped too (as root) ----
SHM_SHARE = 8        # /dev/shm gets 1/8 of disk_mb, /tmp the rest
INODES_PER_MB = 256  # files (inodes) per MB of disk_mb: ~1.2 KB of kernel memory each, so ~0.3 MB per MB of disk


def _tmpfs_caps(disk_mb):
    """-> {"/tmp": (bytes, inodes), "/dev/shm": (bytes, inodes)}: sizes summing to disk_mb (at least one page each:
    tmpfs reads size=0 and nr_inodes=0 as unlimited), inodes summing to disk_mb * INODES_PER_MB (at least 16 each)."""
    total, inodes = max(disk_mb, 1) << 20, max(disk_mb, 1) * INODES_PER_MB
    shm, shm_inodes = max(total // SHM_SHARE, 4096), max(inodes // SHM_SHARE, 16)
    return {"/tmp": (total - shm, inodes - shm_inodes), "/dev/shm": (shm, shm_inodes)}


# Keyring calls for _preexec (numbers as in DENIED): a fresh anonymous session keyring before the code starts
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


def _communicate(proc, data, timeout, cap, tail=4096):
    """Feed stdin, read stdout/stderr (first `cap` bytes each, plus stdout's last `tail`) until EOF or the deadline;
    then kill the whole process group. -> (out, out_tail, err, timed_out)."""
    writer = threading.Thread(target=_feed, args=(os.dup(proc.stdin.fileno()), data), daemon=True)
    proc.stdin.close()
    writer.start()
    bufs, last = {proc.stdout: bytearray(), proc.stderr: bytearray()}, bytearray()
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
            b += chunk[:max(0, cap - len(b))]  # beyond the cap: drained and dropped, so the child never blocks
            if key.fileobj is proc.stdout:
                last = (last + chunk)[-tail:]
    sel.close()
    _kill(proc)
    proc.wait()
    writer.join(1)
    return bytes(bufs[proc.stdout]), bytes(last), bytes(bufs[proc.stderr]), timed_out


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap and its PID-namespace init: the namespace dies with them
    except (ProcessLookupError, PermissionError):
        pass


def _command(mode, hook, max_procs, disk_mb, unsafe):
    """-> (argv, stage, staging dir to remove, descriptors to pass) for a sandboxed run, or a plain child for
    unsafe=True. The one descriptor passed is the filter's (the caller closes it after starting the child)."""
    py = [sys.executable, "-I", "-B", "-X", "utf8", "-c", PRELUDE, mode, "1" if hook else "0", str(max_procs)]
    if unsafe:  # a plain child in a throwaway working directory
        return py, None, tempfile.mkdtemp(prefix="sandbox-unsafe-"), ()
    dirs = _python_dirs()
    if os.geteuid() != 0:
        fd = _filter_fd()
        return _bwrap_args(dirs, dirs, disk_mb, seccomp_fd=fd) + py, None, None, () if fd is None else (fd,)
    stage_dir = tempfile.mkdtemp(prefix="sandbox-py-")  # root: bind each directory here, where 65534 can reach
    os.chmod(stage_dir, 0o755)
    binds = [(d, os.path.join(stage_dir, str(i))) for i, d in enumerate(dirs)]
    writable = {d: os.path.join(stage_dir, name) for d, name in (("/tmp", "tmp"), ("/dev/shm", "shm"))}
    caps = _tmpfs_caps(disk_mb)
    for s in [s for _, s in binds] + list(writable.values()):
        os.mkdir(s)
    stage = _Stage(binds, [(writable[d], size, inodes) for d, (size, inodes) in caps.items()])
    fd = _filter_fd()  # last: nothing after it can fail and leak it
    return (_bwrap_args([s for _, s in binds], dirs, disk_mb, writable, fd) + py, stage, stage_dir,
            () if fd is None else (fd,))


def _run(mode, program, tests, token, stdin, timeout, memory_mb, max_procs, max_output, max_file_mb, disk_mb,
         unsafe, hook, check=True):
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
        out, tail, err, timed_out = _communicate(proc, data, timeout, max_output)
    except (OSError, subprocess.SubprocessError) as e:  # the sandbox could not start: a failed sample
        return Result(False, -1, "", f"sandbox: {e}", False, time.time() - t0, executed=False, reason=str(e))
    finally:
        if stage_dir:
            shutil.rmtree(stage_dir, ignore_errors=True)
    dec = lambda b: b.decode("utf-8", "replace")
    rc = proc.returncode
    ok = rc == 0 and not timed_out
    passed = ok and mode == "tests" and (b"\n" + token.encode() + b"\n") in tail
    return Result(ok, rc, dec(out), dec(err), timed_out, time.time() - t0, passed=passed)


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


def run_tests(program, tests, timeout=10.0, unsafe=False, hook=True, **limits):
    """Score `program` against `tests`: one source of assert statements, or a list of test cases (sources run in
    order, in one namespace). `timeout` is per part: the program's own run and then each case get `timeout` seconds
    each (a part past it fails the sample); the whole run is killed after the sum of those limits plus CASE_SLACK,
    or after RUN_CAP seconds if that comes first.
    `passed` needs exit status 0 AND a fresh random token
    on stdout, which only the harness's statement after the last test writes, so exiting early (sys.exit, os._exit,
    atexit, SystemExit, a __main__ guard) cannot pass. The token reaches the sandbox on stdin, which is swapped for
    /dev/null before the program runs; it is never in the program's source, argv, environment or files. Both parts
    are compiled before either runs; the tests see the builtins as they were before the program ran."""
    cases = [tests] if isinstance(tests, str) else list(tests)
    token = secrets.token_hex(16)
    kw = dict(memory_mb=1024, max_procs=16, max_output=20_000, max_file_mb=16, disk_mb=64) | limits
    payload = "\0".join([repr(float(timeout))] + cases)
    whole = min(timeout * (len(cases) + 1) + CASE_SLACK, RUN_CAP)
    r = _run("tests", program, payload, token, "", whole, kw["memory_mb"],
             kw["max_procs"], kw["max_output"], kw["max_file_mb"], kw["disk_mb"], unsafe, hook)
    r.timed_out = r.timed_out or (r.returncode == 124 and "s limit" in r.stderr)  # a part past its own limit
    return r

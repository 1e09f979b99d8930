"""The kernel behind the sandbox: the system-call filter (seccomp.py) refuses exactly the DENIED calls, each probe
reaches the kernel without it, the 32-bit and x32 entries are refused, the parent's keyring is out of reach, the
namespace's PID 1 cannot be traced, and memory files cannot hold memory past the limit."""
import ctypes
import errno
import os
import platform
import secrets
import struct
import subprocess
import threading

import pytest

import seccomp
from sandbox import run_python
from conftest import HOOK, PY

pytestmark = pytest.mark.sandbox  # skipped with the reason where bubblewrap cannot start (conftest.py)
ARCH = platform.machine()
COL = 0 if ARCH == "x86_64" else 1
needs_filter = pytest.mark.skipif(seccomp.seccomp_program() is None,
                                  reason=f"no system-call table for {ARCH} in seccomp.py: the filter is not loaded")


# ---- the filter: its program, and each refused family probed live -------------------------------------------

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


# ---- the kernel, checked from outside: the parent's keyring, tracing PID 1, memory files --------------------

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


MEMFD_HOARD = """import os
held = 0
try:
    for i in range(96):  # 96 files of 16 MB, each under the file cap
        fd = os.memfd_create(f'm{i}')
        for _ in range(16):
            os.write(fd, b'x' * (1 << 20))
            held += 1
except OSError as e:
    print(e.errno)
print('held', held)"""


@HOOK
def test_memfd_cannot_hold_memory_past_the_limit(hook):
    r = run_python(MEMFD_HOARD, timeout=20, hook=hook, memory_mb=1024, max_file_mb=16)
    held = int(r.stdout.split()[-1]) if "held" in r.stdout else 0
    assert held < 1024, r.stdout  # MB kept in memory files: 1,536 without the filter, past the 1 GB limit

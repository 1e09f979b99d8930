"""
Run untrusted, model-generated Python in a separate process — never in ours.

Layers, each catching what the others might miss:
  - its own process (and process group), a throwaway working directory that is deleted afterwards;
  - wall-clock timeout (the whole process group is killed), CPU-time, address-space (memory), file-size and
    process-count limits (setrlimit);
  - no network: a fresh, empty network namespace when we may create one (root on Linux);
  - inside the interpreter, an audit hook (PEP 578) refuses sockets, fork/exec/subprocess, ctypes, and any file write
    outside the working directory;
  - stdout and stderr go to files and only their first `max_output` bytes are read back.

    result = run_python("print(1 + 1)", timeout=5)   # -> Result(ok=True, stdout='2\n', ...)
"""
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

PRELUDE = r'''
import os, sys
_root = os.path.realpath(os.getcwd())
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_DENY = {"socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo", "os.fork", "os.forkpty", "os.system",
         "os.posix_spawn", "os.spawn", "os.exec", "subprocess.Popen", "ctypes.dlopen", "os.kill", "os.killpg",
         "pty.spawn", "os.startfile"}
_PATHS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink", "os.link",
          "os.truncate", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
def _inside(p):
    p = os.path.realpath(os.fsdecode(p))
    return p == _root or p.startswith(_root + os.sep)
def _hook(event, args):
    if event in _DENY:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and not isinstance(args[0], int):
        mode, flags = args[1] or "", args[2] or 0
        if (any(c in str(mode) for c in "wax+") or flags & _WRITE) and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {args[0]}")
    if event in _PATHS and args and isinstance(args[0], (str, bytes, os.PathLike)) and not _inside(args[0]):
        raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")
sys.addaudithook(_hook)
del _hook
__name__ = "__main__"
exec(compile(open("main.py").read(), "main.py", "exec"))
'''


@dataclass
class Result:
    ok: bool          # exited with status 0 within the limits
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def _limits(memory_mb, cpu_seconds, max_procs, max_file_mb):
    def apply():
        os.setsid()  # own process group: a timeout kills everything it started
        try:  # an empty network namespace: no interfaces, not even loopback (needs privileges; else the hook blocks)
            ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET
        except Exception:
            pass
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_mb << 20, max_file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (max_procs, max_procs))  # not enforced for root: the hook is
    return apply


def run_python(code, timeout=10.0, memory_mb=1024, max_procs=64, max_output=20_000, max_file_mb=16, stdin=""):
    """Run `code` as a Python program in the sandbox. Never raises for anything the code does."""
    work = tempfile.mkdtemp(prefix="sandbox-")
    try:
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write(code)
        out_path, err_path = os.path.join(work, ".stdout"), os.path.join(work, ".stderr")
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        t0 = time.time()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-B", "-c", PRELUDE], cwd=work, env=env, stdout=out,
                                    stderr=err, stdin=subprocess.PIPE,
                                    preexec_fn=_limits(memory_mb, int(timeout) + 1, max_procs, max_file_mb))
            try:
                proc.communicate(stdin.encode(), timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind, too
                except ProcessLookupError:
                    pass
                proc.wait()
        seconds = time.time() - t0
        read = lambda p: open(p, "rb").read(max_output).decode("utf-8", "replace")
        return Result(proc.returncode == 0 and not timed_out, proc.returncode, read(out_path), read(err_path),
                      timed_out, seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""
The program that runs inside the sandbox (PROGRAM, started as `python -I -c PROGRAM MODE HOOK NPROC`): the only code
of ours on that side of the boundary.

It reads from stdin a header of three lengths, then the code under test, the test steps (JSON, scoring only) and a
fresh token; caps its own process count; puts on the in-process audit hook when HOOK is 1 (process creation, sockets,
signals, ctypes and frame introspection refused: a second layer, the OS boundary does not rely on it); then runs the
code. MODE "run" is just that: the code reads the rest of stdin and prints to stdout and stderr. MODE "tests" is
scoring: stdin is /dev/null once read, the code's output goes to stderr, and after the code each test step runs,
each part under its own alarm, and writes one JSON record to the original stdout: a call's value as tagged plain
data (builtin types only: an object of any other class is refused), "ok" (a fallback assert sends the token), or the
first error, which ends the run. What writes the records is bound before the code runs, so patching a module changes
nothing there; fallback asserts run with the standard modules restored and with `__recursivemas_plain__`, which makes
plain-data copies. The records are read and judged outside, in verdict.py.
"""

PROGRAM = r'''
import os, sys, builtins, json, resource, signal, time, types, enum, typing, collections, functools, re
import math, cmath, string, itertools, heapq, operator, copy, bisect, random
def _hook(tests):
    fspath, B, S = os.fspath, bytes, str
    VE, PE, IE = ValueError, PermissionError, ImportError
    DENY = frozenset({"os.fork", "os.forkpty", "os.system", "os.posix_spawn", "os.spawn", "os.exec", "os.kill",
        "os.killpg", "subprocess.Popen", "pty.spawn", "signal.pthread_kill", "socket.connect", "socket.bind",
        "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "sys._current_frames", "sys.settrace",
        "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.symlink"} |
        ({"_thread.start_new_thread"} if tests else set()))
    FRAMES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_locals", "f_globals"})
    def hook(event, args):
        if event == "sys._getframe":
            raise VE("sandbox: frame access is off")
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
def _plain_data():
    """-> (enc, plain): enc(v) is v as JSON-ready data with its builtin types tagged; plain(v) a fresh copy of v in
    builtin types. Both refuse any object whose class is not exactly a builtin data type (TypeError), so an object
    with its own __eq__ never reaches a comparison. Bound before the program runs."""
    T, I, F, S, BO, L, TU, D, SE, FS, C, BY = (type, int, float, str, bool, list, tuple, dict, set, frozenset,
                                              complex, bytes)
    N, BIG, hx, items, TE = type(None), 10 ** 4000, hex, dict.items, TypeError
    # the standard library's dicts whose == against a dict is dict's own: read as dicts
    CO, OD, DD = collections.Counter, collections.OrderedDict, collections.defaultdict
    def refuse(t):
        try:
            name = S.__str__(t.__qualname__) if T(t.__qualname__) is S else "?"
        except BaseException:
            name = "?"
        return TE(f"a returned object of class {name} is not plain data (int, float, str, bool, None, list, "
                  f"tuple, dict, set)")
    def enc(v):
        t = T(v)
        if t is BO or t is S or t is N or t is F:
            return v
        if t is I:
            return v if -BIG < v < BIG else {"h": hx(v)}
        if t is L:
            return {"l": [enc(x) for x in v]}
        if t is TU:
            return {"t": [enc(x) for x in v]}
        if t is D or t is CO or t is OD or t is DD:
            return {"d": [[enc(k), enc(x)] for k, x in items(v)]}
        if t is SE:
            return {"s": [enc(x) for x in v]}
        if t is FS:
            return {"f": [enc(x) for x in v]}
        if t is C:
            return {"c": [v.real, v.imag]}
        if t is BY:
            return {"b": v.hex()}
        raise refuse(t)
    def plain(v):
        t = T(v)
        if t is BO or t is S or t is N or t is F or t is I or t is C or t is BY:
            return v
        if t is L:
            return [plain(x) for x in v]
        if t is TU:
            return TU(plain(x) for x in v)
        if t is D or t is CO or t is OD or t is DD:
            return {plain(k): plain(x) for k, x in items(v)}
        if t is SE:
            return {plain(x) for x in v}
        if t is FS:
            return FS(plain(x) for x in v)
        raise refuse(t)
    return enc, plain
def _dumper():
    """JSON text of what _plain_data's enc returns, written with functions bound before the program runs (C
    functions of str, int and float), so patching the json module changes nothing here."""
    ea = json.encoder.c_encode_basestring_ascii or json.encoder.py_encode_basestring_ascii
    T, S, I, F, BO, L, D = type, str, int, float, bool, list, dict
    irepr, frepr, join, items, inf = int.__repr__, float.__repr__, ", ".join, dict.items, float("inf")
    def dump(x):
        t = T(x)
        if t is S:
            return ea(x)
        if t is BO:
            return "true" if x else "false"
        if x is None:
            return "null"
        if t is I:
            return irepr(x)
        if t is F:
            return "NaN" if x != x else "Infinity" if x == inf else "-Infinity" if x == -inf else frepr(x)
        if t is L:
            return "[" + join([dump(y) for y in x]) + "]"
        if t is D:
            return "{" + join([ea(k) + ": " + dump(v) for k, v in items(x)]) + "}"
        raise TypeError("not JSON data")
    return dump
def _take(n, read):
    buf = b""
    while len(buf) < n and (c := read(0, n - len(buf))):
        buf += c
    return buf
def _main(mode, hook, nproc):
    read = os.read
    head = b""
    while not head.endswith(b"\n"):
        c = read(0, 1)
        if not c:
            break
        head += c
    src, tests, token = [_take(int(n), read) for n in head.split()]
    if mode == "tests":  # nothing of the program may read the test inputs from stdin
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))  # counted in our own user namespace
    first = compile(src, "<program>", "exec")
    limit, steps = 0.0, []
    if mode == "tests":  # tests = JSON {"limit": seconds per part, "steps": [[kind, source, name, new part], ...]}
        spec = json.loads(tests)
        limit = float(spec["limit"])
        steps = [(k, compile(s, f"<test step {i}>", "eval" if k == "call" else "exec"), name, new)
                 for i, (k, s, name, new) in enumerate(spec["steps"], 1)]  # all compiled up front
        del spec, tests
    enc, plain = _plain_data()
    dump = _dumper()
    NOTDATA = object()
    T, D, E, BE, setattr_, modules, sysmod, ALRM = type, dict, enumerate, BaseException, setattr, sys.modules, sys, \
        signal.ITIMER_REAL
    exc_text = lambda e: f"{T(e).__name__}: {e}"[:300]
    keep = [(m, sys.modules[m], vars(sys.modules[m]), D(vars(sys.modules[m]))) for m in ("math", "cmath", "re",
            "string", "itertools", "functools", "collections", "heapq", "operator", "copy", "bisect", "random", "json")]
    keep_sys = [(k, getattr(sys, k)) for k in ("exit", "maxsize", "float_info", "setrecursionlimit")]
    def restore(ns):  # the test's helpers as they were before the program ran
        for name, mod, d, snap in keep:
            modules[name] = mod
            d.update(snap)
            if name in ns:
                ns[name] = mod
        for k, v in keep_sys:
            setattr_(sysmod, k, v)
        ns["__builtins__"] = D(pristine)
        ns["__recursivemas_plain__"] = plain
    rec = -1
    if mode == "tests":  # records go to the original stdout; the program's own output goes to stderr
        rec = os.dup(1)
        os.dup2(2, 1)
    if hook:
        _hook(mode == "tests")
    run, evaluate, flush, pristine = exec, eval, sys.stdout.flush, D(builtins.__dict__)
    clock, timer, write, leave, ok = time.monotonic, signal.setitimer, os.write, os._exit, token.decode()
    del token
    def record(i, what, value):  # everything used here was bound before the program ran; no json module
        data = ('{"i": %d, "%s": %s}\n' % (i, what, dump(value))).encode()
        while data:
            data = data[write(rec, data):]
    def expired(what):  # a part past its limit fails the sample: exit status 124
        write(2, f"\nsandbox: {what} ran past its {limit:g} s limit\n".encode())
        leave(124)
    part = ["the program"]
    if mode == "tests":  # each part (the program, then each test case) gets its own `limit` seconds
        signal.signal(signal.SIGALRM, lambda *_: expired(part[0]))
    ns = {"__name__": "__main__", "__builtins__": builtins}
    if limit:
        timer(ALRM, limit)
    t0 = clock()
    run(first, ns)
    n = 0
    for i, (kind, code, name, new) in E(steps):
        if new:
            if limit:
                timer(ALRM, 0)
                if clock() - t0 > limit:  # a program that caught or blocked the alarm
                    expired(part[0])
            n += 1
            part[0] = f"test case {n}"
            if limit:
                timer(ALRM, limit)
            t0 = clock()
        if kind != "call":
            restore(ns)
        failed = None
        try:
            if kind == "call":
                v = evaluate(code, ns)
                if name:
                    ns[name] = v
                try:
                    v = enc(v)
                except BE:
                    if not name:
                        raise
                    v = NOTDATA  # `root = Node(1)`: kept for the next steps; not data, so no check can use it
            else:
                run(code, ns)
        except BE as e:
            try:
                failed = exc_text(e)
            except BE:
                failed = "an exception that cannot be printed"
        if failed is not None:  # the first error fails the sample: nothing more to run
            record(i, "e", failed)
            break
        if kind == "call" and v is not NOTDATA:
            record(i, "v", v)
        elif kind == "call":
            record(i, "ok", "")
        elif kind == "check":
            record(i, "ok", ok)
        else:
            record(i, "ok", "")
    if limit:
        timer(ALRM, 0)
        if clock() - t0 > limit:
            expired(part[0])
    if mode == "tests":
        flush()
_main(sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]))
'''

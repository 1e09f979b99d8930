"""
The planner: assert-style tests split, with `ast`, into a Plan (verdict.py) of steps for the sandbox and checks
for this process.

plan_tests() walks the tests statement by statement. Each `assert` whose expression is the benchmark's comparison
around calls of the solution (`f(x) == y`, `abs(f(x) - y) < 1e-6`, `math.isclose(f(x), y)`, `set(f(x)) == set(y)`,
`not f(x)`) is split: the calls become steps (their values come back as data), the comparison a check made here.
EvalPlus's loops over literal inputs (`assertion(f(*inp), exp, atol)` in a known form) become one step and one
check per input; a `for` over literals is unrolled; a `check(candidate)` of the tests' own is inlined. Literal
assignments nothing in the sandbox reads (EvalPlus's `results`) stay here. Any other assert form is a fallback:
it runs in the sandbox, each call of the solution wrapped in a converter to plain data, and Plan.fallback counts it.

    plan_tests("assert f(2) == 4")   # -> Plan(steps=[["call", "f(2)", None, True]], checks=[["expr", "_v0 == 4", ...]])
"""
import ast
import builtins

from verdict import SAFE, Plan

# What the comparison of a split assert may hold (see _Planner.residual): these nodes, the names in SAFE and math's
# MATH_OK; LIFT: conversions around a call (`list(f(x))`) that run in the sandbox with the call
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

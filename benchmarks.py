"""
The benchmarks: loaders, the instruction each kind of question gets, and the per-item score().

Each loader returns items {id, question, gold, kind, ...}; kind is math | choice | qa | code | lcb.
Files not shipped with the repository are read from a path the user gives:
  gpqa_diamond   --gpqa-path or GPQA_PATH            (its authors ask that it never appears online in plain text)
  bamboogle      --bamboogle-path or BAMBOOGLE_PATH  (no licence stated)
  livecodebench  --lcb-path or LCB_PATH              (LiveCodeBench's published JSONL; JSON test cases only)
"""
import ast
import base64
import binascii
import builtins
import functools
import json
import os
import zlib

import scoring
import tasks
from errors import UserError
from files import read_jsonl
from planner import plan_tests
from sandbox import run_tests
from verdict import lcb_plan

HERE = os.path.dirname(os.path.abspath(__file__))
D = os.path.join(HERE, "data")
USER_PATHS = {"gpqa_diamond": ("--gpqa-path", "GPQA_PATH"), "bamboogle": ("--bamboogle-path", "BAMBOOGLE_PATH"),
              "livecodebench": ("--lcb-path", "LCB_PATH")}

MATH = "Solve the problem. Put the final answer in \\boxed{}."
CHOICE = "Answer with the letter of the correct option, written as: The answer is (X)."
CODE = "Write the complete Python code in one ```python block."
QA = "Answer with a short phrase. Put the final answer in \\boxed{}."
LCB_STDIN = "Read the input from standard input, solve the problem and write the answer to standard output. " + CODE
LCB_CALL = "Complete the starter code (keep its class and method names). " + CODE
INSTRUCTION = {"math": MATH, "choice": CHOICE, "code": CODE, "qa": QA, "lcb": ""}  # lcb: inside the question

BENCHMARKS = ["gsm8k", "arith2", "math500", "aime24", "aime25", "aime26", "amc23", "medqa", "arc_challenge", "gpqa_diamond",
              "humaneval", "humanevalplus", "mbpp", "mbppplus", "livecodebench", "hotpotqa", "bamboogle"]


def _jsonl(path, fields=()):
    """The rows of a JSONL file (.gz too; files.read_jsonl names the file and line of anything unreadable), each an
    object with `fields`; a one-line UserError when the file holds no rows or a row is not that."""
    return _checked_rows([row for _, row in read_jsonl(path)], path, fields, "line", 1)


def _checked_rows(rows, path, fields, unit="row", first=0):
    """rows, each an object holding every one of `fields`; else a one-line UserError naming the file and the row."""
    if not rows:
        raise UserError(f"{path}: the file holds no rows; pass the benchmark's file")
    for n, r in enumerate(rows, first):
        if not isinstance(r, dict):
            raise UserError(f"{path}: {unit} {n} is a {type(r).__name__}, not a JSON object; pass the benchmark's file")
        missing = [k for k in fields if k not in r]
        if missing:
            raise UserError(f"{path}: {unit} {n} has no '{missing[0]}' field (each row needs "
                            f"{', '.join(fields)}); pass the benchmark's file")
    return rows


def _options(opts):
    return "\n".join(f"{k}. {v}" for k, v in opts)


def user_path(name, given=None):
    """The file of a benchmark that is not shipped: the flag's value, else the environment variable; a UserError
    naming both when neither points at a file."""
    flag, env = USER_PATHS[name]
    path = given or os.environ.get(env)
    if not path or not os.path.isfile(path):
        where = f"'{path}' is not a file" if path else "no file given"
        raise UserError(f"{name} is not shipped with this repository ({where}); pass {flag} FILE or set {env}=FILE")
    return path


# ---- LiveCodeBench: JSON test cases only --------------------------------------------------------------------

def lcb_tests(field, qid):
    """public_test_cases / private_test_cases -> [{input, output, testtype}]. Accepts a list, a JSON string, or
    base64 + zlib of a JSON string; refuses the pickled form (unpickling untrusted data can run code)."""
    if isinstance(field, list):
        return field
    if not field:
        return []
    try:
        return json.loads(field)
    except json.JSONDecodeError:
        pass
    try:
        raw = zlib.decompress(base64.b64decode(field, validate=True))
    except (binascii.Error, zlib.error, ValueError):
        raise UserError(f"LiveCodeBench {qid}: test cases are neither JSON nor base64+zlib JSON") from None
    if raw[:1] == b"\x80":
        raise UserError(f"LiveCodeBench {qid}: test cases are pickled; this loader never unpickles: convert them to "
                        f"JSON (a list of {{input, output, testtype}}) first")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"LiveCodeBench {qid}: compressed test cases are not JSON") from None


def load_lcb(path):
    out = []
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text (byte {e.start}); pass a UTF-8 JSON file") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not JSON ({e.msg}, line {e.lineno}); pass LiveCodeBench's JSON or "
                            f"JSONL") from None
        if not isinstance(rows, list):
            raise UserError(f"{path}: holds a {type(rows).__name__}, not a list of rows; pass LiveCodeBench's JSON "
                            f"list or JSONL")
        rows = _checked_rows(rows, path, ("question_content",))
    else:
        rows = _jsonl(path, ("question_content",))
    for r in rows:
        qid = r.get("question_id", len(out))
        meta = r.get("metadata") or {}
        meta = json.loads(meta) if isinstance(meta, str) else meta
        tests = lcb_tests(r.get("public_test_cases"), qid) + lcb_tests(r.get("private_test_cases"), qid)
        if not tests:
            raise UserError(f"LiveCodeBench {qid} in {path} has no test cases")
        starter = r.get("starter_code") or ""
        q = r["question_content"]
        q += (f"\n\n{LCB_CALL}\n```python\n{starter}\n```" if starter else f"\n\n{LCB_STDIN}")
        out.append(dict(id=qid, question=q, gold=None, kind="lcb", tests=tests, func_name=meta.get("func_name")))
    return out


def _loop_size(node, sizes):
    """How many times a `for` loop runs when it walks literal lists (EvalPlus: `for i, (inp, exp) in
    enumerate(zip(inputs, results))`), else None."""
    if not isinstance(node, ast.For) or node.orelse or any(isinstance(n, (ast.Break, ast.Continue))
                                                           for n in ast.walk(node)):
        return None
    it = node.iter
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "enumerate" and len(it.args) == 1:
        it = it.args[0]
    names = it.args if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "zip" else [it]
    if not names or not all(isinstance(n, ast.Name) and n.id in sizes for n in names):
        return None
    return min(sizes[n.id] for n in names)


def test_cases(source):
    """Assert-style tests -> the test cases sandbox.run_tests times one by one (paper B.3: a time limit per test
    case): each top-level statement is a case; a call `check(f)` of the tests' own `def check(candidate)` becomes
    `candidate = f` and then check's statements; a loop over literal lists of inputs becomes one case per input.
    Source that does not parse stays one case."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [source]
    checks = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and len(n.args.args) == 1
              and not any(isinstance(x, ast.Return) for x in ast.walk(n))}
    sizes, out = {}, []

    def add(stmts):
        for n in stmts:
            if (isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                    and isinstance(n.value, (ast.List, ast.Tuple))):
                sizes[n.targets[0].id] = len(n.value.elts)
            call = n.value if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) else None
            if (call and isinstance(call.func, ast.Name) and call.func.id in checks and len(call.args) == 1
                    and not call.keywords):
                fn = checks[call.func.id]
                out.append(f"{fn.args.args[0].arg} = {ast.unparse(call.args[0])}")
                add(fn.body)
            elif (k := _loop_size(n, sizes)) is not None:
                name = f"_cases_{len(out)}"
                out.append(f"{name} = list({ast.unparse(n.iter)})")
                body = "\n".join(ast.unparse(b) for b in n.body)
                out.extend(f"{ast.unparse(n.target)} = {name}[{j}]\n{body}" for j in range(k))
            else:
                out.append(ast.unparse(n))
    add(tree.body)
    return out


@functools.lru_cache(maxsize=4096)  # a benchmark loaded twice in one process is split once
def test_plan(source, reference=""):
    """Assert-style tests -> a Plan (verdict.py), derived once at load time: one time limit per top-level statement and
    per EvalPlus input; each assert the ast split into (call, expected, comparison) has its call run in the sandbox
    and its comparison made here; the rest are fallbacks (see split_counts). `reference`: the benchmark's own
    solution, whose top-level functions named like a builtin (MBPP 126's `sum`) are the solution's in the tests."""
    try:
        shadow = {n.name for n in ast.parse(reference).body if isinstance(n, ast.FunctionDef)} & set(dir(builtins))
    except SyntaxError:
        shadow = set()
    return plan_tests(source, per_statement=True, solution_names=shadow)


CODE_BENCHMARKS = ("humaneval", "humanevalplus", "mbpp", "mbppplus")


def split_counts(name):
    """-> {asserts split, fallback asserts, items with a fallback, the fallback forms by item} for one of
    CODE_BENCHMARKS: how much of its verdict is decided outside the code under test."""
    items = load_benchmark(name)
    forms = {it["id"]: it["plan"].fallback_forms for it in items if it["plan"].fallback}
    return dict(split=sum(it["plan"].split for it in items), fallback=sum(it["plan"].fallback for it in items),
                items=len(items), items_with_fallback=len(forms), forms=forms)


# The EvalPlus tests compare floats with numpy.allclose; the sandbox refuses the native libraries numpy loads, so
# their `import numpy as np` is replaced by this pure-Python stand-in (same tolerance rule, |a - b| <= atol + rtol |b|).
NUMPY_STANDIN = r'''
class np:
    class ndarray:
        pass
    float64 = float32 = float
    @staticmethod
    def allclose(a, b, rtol=1e-05, atol=1e-08):
        flat = lambda x: [z for y in x for z in flat(y)] if isinstance(x, (list, tuple)) else [x]
        a, b = flat(a), flat(b)
        return len(a) == len(b) and all(abs(x - y) <= atol + rtol * abs(y) for x, y in zip(a, b))
'''


def _plus_tests(test):
    test = test.replace("import numpy as np\n", NUMPY_STANDIN, 1)
    # HumanEval/32 (find_zero): the published check swaps _poly(xs, x)'s arguments and lacks abs()
    return test.replace("_poly(*candidate(*inp), inp) <=", "abs(_poly(*inp, candidate(*inp))) <=")


# ---- the benchmarks -----------------------------------------------------------------------------------------

def load_benchmark(name, gpqa_path=None, bamboogle_path=None, lcb_path=None):
    if name == "gsm8k":
        return [dict(id=i, question=r["question"], gold=r["answer"].rsplit("####", 1)[1].strip().replace(",", ""),
                     kind="math") for i, r in enumerate(_jsonl(f"{D}/gsm8k/test.jsonl", ("question", "answer")))]
    if name == "arith2":  # generated (tasks.py): held-out templates and numbers, the same on every machine
        return [dict(id=i, question=r["question"], gold=r["final"], kind="math")
                for i, r in enumerate(tasks.arith_rows(tasks.ARITH_TEST, "held-out"))]
    if name in ("math500", "aime24", "aime25", "aime26", "amc23"):
        return [dict(id=r.get("unique_id", r.get("id", i)), question=r["problem"], gold=str(r["answer"]), kind="math")
                for i, r in enumerate(_jsonl(f"{D}/{name}/test.jsonl", ("problem", "answer")))]
    if name == "medqa":
        rows = _jsonl(f"{D}/medqa/test.jsonl", ("question", "options", "answer_idx"))
        out = []
        for i, r in enumerate(rows):
            opts = r["options"] if isinstance(r["options"], dict) else ast.literal_eval(r["options"])
            out.append(dict(id=r.get("realidx", i), question=f"{r['question']}\n\n{_options(sorted(opts.items()))}",
                            gold=r["answer_idx"], kind="choice", letters="".join(sorted(opts))))
        return out
    if name == "arc_challenge":
        out = []
        for r in _jsonl(f"{D}/arc_challenge/ARC-Challenge-Test.jsonl", ("id", "question", "choices", "answerKey")):
            ch = r["choices"] if isinstance(r["choices"], dict) else ast.literal_eval(r["choices"])
            labels = ch["label"]
            if labels[0].isdigit():  # a few rows use 1-4: map to letters
                gold = "ABCDE"[labels.index(r["answerKey"])]
                labels = list("ABCDE"[:len(labels)])
            else:
                gold = r["answerKey"]
            out.append(dict(id=r["id"], question=f"{r['question']}\n\n{_options(zip(labels, ch['text']))}",
                            gold=gold, kind="choice", letters="".join(labels)))
        return out
    if name == "gpqa_diamond":  # never shipped: read from the user's path
        return [dict(id=i, question=r["question"], gold=str(r["answer"]).strip(), kind="choice", letters="ABCD")
                for i, r in enumerate(_jsonl(user_path(name, gpqa_path), ("question", "answer")))]
    if name in CODE_BENCHMARKS:
        items = _load_code(name)
        for it in items:
            it["plan"] = test_plan(it["tests"], it["gold"])
        return items
    return _load_other(name, gpqa_path, bamboogle_path, lcb_path)


def _load_code(name):
    if name in ("humaneval", "humanevalplus"):  # HumanEval+: the same prompts, the plus tests in check()
        path = f"{D}/humaneval/HumanEval.jsonl.gz" if name == "humaneval" else \
            f"{D}/humanevalplus/HumanEvalPlus-OriginFmt.jsonl.gz"
        return [dict(id=r["task_id"], question=f"Complete this Python function.\n\n```python\n{r['prompt']}```",
                     gold=r["canonical_solution"], kind="code", prompt=r["prompt"], entry_point=r["entry_point"],
                     tests=f"{_plus_tests(r['test'])}\ncheck({r['entry_point']})\n")
                for r in _jsonl(path, ("task_id", "prompt", "canonical_solution", "entry_point", "test"))]
    if name == "mbpp":  # the standard test split: task ids 11-510
        out = []
        for r in _jsonl(f"{D}/mbpp/mbpp.jsonl", ("task_id", "text", "code", "test_list")):
            if not 11 <= int(r["task_id"]) <= 510:
                continue
            tests = r["test_list"] if isinstance(r["test_list"], list) else ast.literal_eval(r["test_list"])
            out.append(dict(id=r["task_id"], question=f"{r['text']}\nYour code should pass this test:\n{tests[0]}",
                            gold=r["code"], kind="code", prompt="",
                            tests=(r.get("test_setup_code") or "") + "\n" + "\n".join(tests) + "\n"))
        return out
    if name == "mbppplus":  # MBPP+: `test` holds the base + plus inputs, expected outputs and atol, as assertions
        return [dict(id=r["task_id"], question=f"{r['prompt']}\nYour code should pass this test:\n{r['test_list'][0]}",
                     gold=r["code"], kind="code", prompt="", tests="\n".join(r["test_imports"]) + "\n" + _plus_tests(r["test"]))
                for r in _jsonl(f"{D}/mbppplus/MbppPlus-OriginFmt.jsonl.gz",
                                    ("task_id", "prompt", "code", "test_list", "test_imports", "test"))]


def _load_other(name, gpqa_path=None, bamboogle_path=None, lcb_path=None):
    if name == "livecodebench":
        return load_lcb(user_path(name, lcb_path))
    if name == "hotpotqa":
        with open(f"{D}/hotpotqa/hotpot_dev_v1_simplified.json") as f:
            return [dict(id=i, question=r["question"], gold=r["answer"], kind="qa") for i, r in enumerate(json.load(f))]
    if name == "bamboogle":  # not shipped (no licence): the user's JSONL of {question, answer}
        return [dict(id=i, question=r["question"], gold=str(r["answer"]).strip(), kind="qa")
                for i, r in enumerate(_jsonl(user_path(name, bamboogle_path), ("question", "answer")))]
    raise UserError(f"unknown benchmark '{name}'; use one of {', '.join(BENCHMARKS)}")


def score(item, text, timeout=10.0, unsafe=False, hook=True):
    """-> (prediction, correct: bool, extra: dict); extra["rule"] names what decided, where the scorer says.
    Code: `timeout` seconds for each test case (and for the program's own run); `hook`: the sandbox's in-process
    audit hook (the verdict does not depend on it)."""
    kind = item["kind"]
    if kind in ("math", "choice", "qa"):
        text = scoring.own_words(text)  # a tool's printed output is not the model's statement
    if kind == "math":
        pred, ok, rule = scoring.judge_math(text, item["gold"])
        return pred, ok, {"rule": rule}
    if kind == "choice":
        pred, ok, rule = scoring.judge_choice(text, item["gold"], item.get("letters", "ABCD"))
        return pred, ok, {"rule": rule}
    if kind == "qa":
        pred = scoring.extract_qa(text)
        em, f1 = scoring.qa_scores(pred, item["gold"])
        return pred, em == 1.0, {"f1": f1, "rule": "exact match"}
    if kind == "lcb":
        code = scoring.extract_code(text)
        # the sandbox sends back what the answer printed or returned; the verdict is made here
        res = run_tests("", lcb_plan(code, item["tests"], item.get("func_name")), timeout=timeout, unsafe=unsafe,
                        hook=hook)
        return code[-400:], res.passed, {"rule": f"{len(item['tests'])} tests", "timed_out": res.timed_out,
                                         "executed": res.executed, "error": [res.detail or res.reason][:1]}
    code = scoring.extract_code(text)
    if item.get("entry_point") and f"def {item['entry_point']}" not in code:
        code = item["prompt"] + code  # a bare function body continues the prompt
    # one time limit per test case; the sandbox sends back the values, the comparisons are made here
    res = run_tests(code, item.get("plan") or test_plan(item["tests"]), timeout=timeout, unsafe=unsafe, hook=hook)
    return code[-400:], res.passed, {"rule": "tests", "timed_out": res.timed_out, "executed": res.executed,
                                     "error": [res.detail or res.reason][:1]}


def judge_answer(backbone, question, gold, pred, max_new_tokens=4):
    """An LLM judge (off by default): does `pred` mean the same as `gold`? -> (yes: bool, the judge's text)."""
    import torch
    prompt = backbone.prompt([
        {"role": "system", "content": "You grade short answers. Reply with one word: yes or no."},
        {"role": "user", "content": f"Question: {question}\nReference answer: {gold}\nCandidate answer: {pred}\n"
                                    f"Does the candidate answer mean the same as the reference answer?"}])
    ids = torch.tensor([backbone.encode(prompt)], device=backbone.device)  # [1, T]
    texts, _ = backbone.generate(backbone.embed(ids), torch.ones_like(ids), max_new_tokens=max_new_tokens)
    return texts[0].strip().lower().startswith("yes"), texts[0]

"""
Strict scoring for the paper's benchmarks. What the model wrote must state its answer; nothing is guessed for it
(no first-integer match, no default letter).

  math     the LAST stated answer, whichever form: \\boxed{..} / \\fbox{..}, "The final answer is X" (the Minerva line
           "Final Answer: The final answer is $X$. I hope it is correct."), "Answer: X", GSM8K's "#### X"; several
           boxes in the last sentence ("\\boxed{-2} and \\boxed{1}") are read as one list. An explicit disagreement
           is never equal: another base (2516_8 vs 2516_9), another unit power (cm^2 vs cm^3), another label
           (y=5 vs x=5). Otherwise equal when, in this order:
             exact        the normalised LaTeX strings are equal (\\sqrt2 = \\sqrt{2}, x^{2} = x^2, 10{,}455 = 10455)
             numeric      both are exact rationals of equal value (4.6667 is not 14/3)
             math-verify  Hugging Face's math-verify (sympy) says so: on sympy results only (not its string
                          fallback), with \\mathrm{e} read as e, decimals compared to 12 places, not 6
                          (0.0833333 is not 1/12), and never for two plain words (sympy: a product of letters)
           otherwise `none`; `no-answer` when nothing was stated. judge_math / judge_choice return the rule.
  choice   an explicitly stated letter ("The answer is (C)", "The answer is **(C)**", "Answer: $C$", \\boxed{C},
           \\text{(C)}, or a line holding only the letter); the first statement of a sentence counts, the last such
           sentence wins ("The answer is D; it cannot be A or B" is D); a line opening with the letter ("D. It can't
           be A or B") counts when nothing else states one; unparseable = wrong (the released scorer defaults to "A").
  qa       exact match and token F1 after SQuAD normalisation, on the boxed / "answer:" span or the first line.
  code     the last ```python block (or the whole text), run with the benchmark's tests in sandbox.py.
What a tool printed (tools.py puts it between <result> and </result>) is not the model's statement: own_words()
drops it before math, choice and qa answers are read (benchmarks.score).
"""
import logging
import re
import string
import threading
from collections import Counter
from fractions import Fraction

logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeout notices would flood an evaluation log


def last_boxed(text):
    """Content of the last \\boxed{...} or \\fbox{...}, braces balanced; None when there is none (or it is unclosed)."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        m = re.match(r"\\boxed\s+(\S+)", text[start:])  # \boxed 5
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


TOOL_RESULT = re.compile(r"<result>.*?(?:</result>|$)", re.S)  # tools.answer_with_tools' <result>...</result>


def own_words(text):
    """The text without what tools printed into it: each <result>...</result> becomes a paragraph break, so a box
    printed by a tool is neither read as the answer nor joined to the model's own box."""
    return TOOL_RESULT.sub("\n\n", text)


# ---- math: extraction ----------------------------------------------------------------------------------------

def _boxes(text):
    """[(start, end, content)] of every closed \\boxed{..} / \\fbox{..} (and `\\boxed 5`), in order of start."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    out.append((m.start(), j + 1, text[i + 1:j]))
                    break
        elif i > m.end():
            w = re.match(r"[^\s$]+", text[i:])
            if w:
                out.append((m.start(), i + w.end(), w.group(0)))
    return out


# between two boxes of one multi-part answer: "\boxed{-2} and \boxed{1}", "\boxed{1} papers and \boxed{2} bins";
# not across a sentence end, and not "\boxed{1/2}, no: \boxed{3}" (a correction)
BOX_GAP = re.compile(r"(?:(?![.?!](?:\s|$)|\n\s*\n).)*", re.S)
CORRECTION = re.compile(r"\b(?:then|wait|actually|instead|no|not|but|or|rather|correct(?:ion|ed)?)\b", re.I)
# "The final answer is", "Final Answer:", "the answer is", "Answer:" at a line's start (markdown allowed), "####";
# "Answer" at a line's start without the colon counts only before a math span ("Answer $9$")
STATED = re.compile(r"final answer(?:[ \t]+is)?[ \t]*\**[ \t]*[:=]?|\bthe answer is[ \t]*:?"
                    r"|^[ \t>*#]*answer[ \t]*\**[ \t]*:|^[ \t]*####|^[ \t>*#]*answer(?=[ \t]*(?:\$|\\\(|\\\[))",
                    re.I | re.M)
MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$((?:\\\$|[^$\n])+)\$|\\\(([^\n]+?)\\\)|\\\[(.+?)\\\]", re.S)


def _stated_value(rest, plain_ok):
    """The answer right after a marker: a leading $..$ / \\(..\\) span, else the rest of its sentence ("The volume is
    120" -> 120). None if empty or, unless plain_ok, plain words ("the answer is correct" states no answer)."""
    rest = rest.lstrip(" \t*:")
    m = MATH_SPAN.match(rest)
    if m:
        return next(g for g in m.groups() if g is not None).strip() or None
    line = rest.split("\n", 1)[0]
    line = re.split(r"\.(?=\s|$)|(?<!\d)\.(?!\d)|\s+I hope\b", line, maxsplit=1)[0].strip(" *$")
    said = re.search(r"\s(?:is|are|was|equals)\s+(.+)$", line)  # a sentence: its last "is ..." part
    if said and not re.search(r"\s(?:is|are|was|equals)\s", said.group(1)):
        line = said.group(1).strip(" *$")
    if not line or len(line) > 80:
        return None
    if not plain_ok and not re.search(r"[\d\\$^]", line):
        return None
    return line


def extract_math(text):
    """The last stated answer (see the module docstring), or None."""
    found = []  # (position, answer)
    boxes = _boxes(text)
    if boxes:
        run = [boxes[-1]]
        while len(run) < len(boxes):
            prev = boxes[-len(run) - 1]
            gap = text[prev[1]:run[0][0]]
            if prev[1] > run[0][0] or len(gap) > 50 or not BOX_GAP.fullmatch(gap) or CORRECTION.search(gap):
                break
            run.insert(0, prev)
        parts = list(dict.fromkeys(b[2].strip() for b in run))  # several boxes of one answer, repeats dropped
        found.append((run[-1][0], ", ".join(parts)))
    for m in STATED.finditer(text):
        marker = m.group(0).lstrip(" \t>*#").lower()
        rest = text[m.end():]
        if marker.startswith("answer") and ":" not in marker:
            rest = rest.lstrip(" \t")  # "Answer $9$": the span only
            span = MATH_SPAN.match(rest)
            value = next(g for g in span.groups() if g is not None).strip() if span else None
        else:
            value = _stated_value(rest, plain_ok=marker.startswith(("answer", "####")))
        if value and "\\boxed" not in value and "\\fbox" not in value:
            found.append((m.start(), value))
    return max(found)[1].strip() if found else None


# ---- math: equivalence ---------------------------------------------------------------------------------------

def normalize_math(s):
    s = s.strip()
    s = re.sub(r"\\(?:text|textnormal|mbox|mathrm|textbf|mathbf|textit)\{\s*([^{}]*)\}", r"\1", s)
    for a, b in [("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"), ("\\left", ""), ("\\right", ""),
                 ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""),
                 ("%", ""), ("\\$", ""), ("$", ""), ("\\displaystyle", "")]:
        s = s.replace(a, b)
    s = re.sub(r"(\d)(?:,|\{,\})(?=\d{3}(?!\d))", r"\1", s)  # thousands: 1,000,000 / 10{,}455 (not "32, 349")
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)  # "x=5" -> "5"
    units = (r"(?:dollars?|cents?|units?|degrees?|cm|m|km|kg|g|inches|inch|feet|foot|ft|hours?|minutes?|seconds?|mph"
             r"|meters?|miles?|pounds?|years?|days?)")
    s = re.sub(r"(?<=\d)" + units + r"\^?\d*$", "", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)  # \frac9{19} -> \frac{9}{19}
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)  # \frac{9}4 -> \frac{9}{4}
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)  # \sqrt2 -> \sqrt{2}
    s = re.sub(r"\^\{(\w)\}", r"^\1", s)  # x^{2} -> x^2
    s = s.rstrip(".")
    return s


def to_number(s):
    """An exact rational for '3', '-2.50', '1/4', '\\frac{3}{4}', '-\\frac{1}{2}'; None for anything else."""
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    try:
        if m:
            v = Fraction(int(m.group(2)), int(m.group(3)))
            return -v if m.group(1) else v
        if re.fullmatch(r"-?\d+/\d+", s):
            a, b = s.split("/")
            return Fraction(int(a), int(b))
        if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
            return Fraction(s)
    except (ZeroDivisionError, ValueError):
        return None
    return None


UNIT = r"(?:\\(?:text|mbox|mathrm|textnormal)\{\s*[A-Za-z. ]+\}|\b(?:cm|mm|km|m|in|ft|inches|feet|meters|units))"
GUARDS = [("base", re.compile(r"(?<=\d)_\{?(\d+)\}?")),           # 2516_8 vs 2516_9
          ("unit exponent", re.compile(UNIT + r"\s*\^\{?(\d)\}?")),  # cm^2 vs cm^3
          ("label", re.compile(r"^\s*([a-zA-Z])\s*=(?!=)"))]            # y=5 vs x=5 (one label alone is dropped)


def _conflict(pred, gold):
    """The name of an explicit disagreement that no equivalence may override (other base, other unit power), or None."""
    for name, pat in GUARDS:
        a, b = set(pat.findall(pred)), set(pat.findall(gold))
        if a and b and a != b:
            return name
    return None


def _words(s):
    return re.fullmatch(r"[A-Za-z][A-Za-z ]+", re.sub(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}", r"\1", s).strip())


def _for_math_verify(s):
    s = re.sub(r"\\(?:mathrm|text|operatorname)\{\s*e\s*\}", "e", s)  # else "-\mathrm{e}" parses to the string "-"
    return "\\boxed{" + s + "}"


def _too_big(s):
    """A power tower or a huge exponent: sympy would evaluate it in C, holding the interpreter past any timeout."""
    return bool(re.search(r"\^\s*\{[^{}]*\^|\^\s*\{?\s*\d{4}|\d{60}|\d{3,}\s*!", s))


def _math_verify(pred, gold, seconds=5):
    """math-verify's verdict, sympy results only (its string fallback would call "-..." equal to "-...").
    Its timeouts are signal alarms, which work in the main thread only: elsewhere it runs in a daemon thread that is
    abandoned (verdict: not equal) after 3 x `seconds`."""
    from math_verify import parse, verify

    def run(t):
        g = [x for x in parse(_for_math_verify(gold), parsing_timeout=t) if not isinstance(x, str)]
        p = [x for x in parse(_for_math_verify(pred), parsing_timeout=t) if not isinstance(x, str)]
        return bool(g and p and verify(g, p, float_rounding=12, timeout_seconds=t))

    if threading.current_thread() is threading.main_thread():
        return run(seconds)
    box = []
    worker = threading.Thread(target=lambda: box.append(run(None)), daemon=True)
    worker.start()
    worker.join(3 * seconds)
    return bool(box and box[0])


def math_verdict(pred, gold):
    """-> (equal: bool, rule): rule is exact, numeric, math-verify, none or no-answer."""
    if pred is None:
        return False, "no-answer"
    if _conflict(pred, gold):
        return False, "none"
    p, g = normalize_math(pred), normalize_math(gold)
    if p == g:
        return True, "exact"
    a, b = to_number(p), to_number(g)
    if a is not None and b is not None:
        return (True, "numeric") if a == b else (False, "none")
    if _too_big(pred) or _too_big(gold) or (_words(pred) and _words(gold)):  # sympy: Evelny = E*v*e*l*n*y = Evelyn
        return False, "none"
    if _math_verify(pred, gold):
        return True, "math-verify"
    return False, "none"


def math_equal(pred, gold):
    return math_verdict(pred, gold)[0]


def judge_math(text, gold):
    """-> (prediction or None, correct, rule that decided)."""
    pred = extract_math(text)
    ok, rule = math_verdict(pred, gold)
    return pred, ok, rule


def score_math(text, gold):
    pred, ok, _ = judge_math(text, gold)
    return pred, ok


# ---- multiple choice -----------------------------------------------------------------------------------------

DECOR = r"[\s:*$(\[{]*(?:\\(?:text|textbf|mathrm|mathbf|boxed)\{[\s(]*)?"  # "**(", "$", "\text{(" before a letter
END = r"(?![A-Za-z])"
CHOICE = [r"(?i:answer is)" + DECOR + r"([A-J])" + END,  # letters: capitals only
          r"^[ \t>*#]*(?i:answer)[ \t]*\**[ \t]*:" + DECOR + r"([A-J])" + END,
          r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*\(?([A-J])\)?\s*\}", r"\\text(?:bf)?\{\s*\(([A-J])\)\s*\}",
          r"^\s*\**\(?([A-J])\)?\**[.:]?\s*$", r"(?i:option)\s*\(?([A-J])\)?\s*(?i:is correct)"]


# a line that opens with the letter and goes on ("D. It can't be A or B", "**D)** because ..."): read only when no
# other form states a letter anywhere, and only when every such line names the same letter (not a list of options)
LEADING = re.compile(r"^[ \t>*#]*\**\(?([A-J])\)?(?:[.):]\**|\**[.):])[ \t]+\S", re.M)
SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def extract_choice(text, letters="ABCD"):
    """The stated letter, or None. Within one sentence the FIRST statement counts ("The answer is D; it cannot be A
    or B" states D; the letters after it are mentions); across sentences the LAST one wins (models often restate or
    correct their final choice)."""
    found = []
    for pat in CHOICE:
        for m in re.finditer(pat, text, re.M):
            found.append((m.start(1), m.group(1)))
    found = [f for f in found if f[1] in letters]
    if found:
        ends = [m.start() for m in SENTENCE_END.finditer(text)]
        sentence = lambda pos: sum(e < pos for e in ends)
        first = {}
        for pos, letter in sorted(found):
            first.setdefault(sentence(pos), (pos, letter))
        return max(first.values())[1]
    leading = {m.group(1) for m in LEADING.finditer(text) if m.group(1) in letters}
    return leading.pop() if len(leading) == 1 else None


def judge_choice(text, gold, letters="ABCD"):
    """-> (letter or None, correct, rule): exact, none or no-answer."""
    pred = extract_choice(text, letters)
    if pred is None:
        return None, False, "no-answer"
    ok = pred == gold.strip().upper()
    return pred, ok, "exact" if ok else "none"


def score_choice(text, gold, letters="ABCD"):
    pred, ok, _ = judge_choice(text, gold, letters)
    return pred, ok


# ---- short answers and code ---------------------------------------------------------------------------------

def normalize_qa(s):
    s = s.lower()
    s = "".join(c for c in s if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def extract_qa(text):
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    m = re.search(r"answer\s*(?:is)?\s*:?\s*(.+)", text, re.I)
    return (m.group(1) if m else (text.strip().splitlines() or [""])[0]).strip().rstrip(".")


def qa_scores(pred, gold):
    """(exact match, token F1), SQuAD-style."""
    p, g = normalize_qa(pred).split(), normalize_qa(gold).split()
    em = float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return em, 0.0
    prec, rec = common / len(p), common / len(g)
    return em, 2 * prec * rec / (prec + rec)


def extract_code(text):
    blocks = re.findall(r"```(?:python|py)?\s*\n(.*?)```", text, re.S)
    return blocks[-1] if blocks else text

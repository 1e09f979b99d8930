"""
Strict scoring (DESIGN.md §6). What the model wrote must state its answer; nothing is guessed for it.

  math     the last balanced \\boxed{...} (fallback: an explicit "final answer: ..." line); equal when the normalised
           LaTeX strings are equal or both are exact rationals of equal value. Never "the first integer in the output".
  choice   an explicit letter ("The answer is (C)", "Answer: C", \\boxed{C}, or a line holding only the letter);
           unparseable = wrong (the released scorer defaults to "A").
  qa       exact match and token F1 after SQuAD normalisation, on the boxed / "answer:" span or the first line.
  code     the last ```python block (or the whole text), run with the benchmark's tests in sandbox.py.
"""
import re
import string
from collections import Counter
from fractions import Fraction


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


FINAL_LINE = re.compile(r"(?:final answer\s*(?:is)?\s*[:=]?|the answer is\s*:?|^\s*answer\s*:)\s*(.+)", re.I)


def extract_math(text):
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for line in reversed(text.strip().splitlines()):
        m = FINAL_LINE.search(line)
        if m:
            return m.group(1).strip().rstrip(".").strip("$ ")
    return None


def normalize_math(s):
    s = s.strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", s)
    for a, b in [("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""), ("\\!", ""),
                 ("\\,", ""), ("\\;", ""), ("\\ ", ""), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""), ("%", ""),
                 ("\\$", ""), ("$", ""), ("\\displaystyle", "")]:
        s = s.replace(a, b)
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)  # "x=5" -> "5"
    units = r"(?:dollars?|cents?|units?|degrees?|cm|m|km|kg|g|inches|inch|feet|foot|ft|hours?|minutes?|seconds?|mph|meters?|miles?|pounds?|years?|days?)"
    s = re.sub(r"(?<=\d)" + units + r"\^?\d*$", "", s)
    s = re.sub(r"(\d),(?=\d{3}(?!\d))", r"\1", s)  # thousands separators: 1,000,000 -> 1000000
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
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


def math_equal(pred, gold):
    if pred is None:
        return False
    p, g = normalize_math(pred), normalize_math(gold)
    if p == g:
        return True
    a, b = to_number(p), to_number(g)
    return a is not None and b is not None and a == b


def score_math(text, gold):
    pred = extract_math(text)
    return pred, math_equal(pred, gold)


CHOICE = [r"answer is\s*:?\s*\(?\**([A-J])\b", r"answer\s*:\s*\(?\**([A-J])\b", r"\\boxed\{\s*\(?([A-J])\)?\s*\}",
          r"^\s*\(?([A-J])\)?[.:]?\s*$", r"option\s*\(?([A-J])\)?\s*is correct"]


def extract_choice(text, letters="ABCD"):
    """The stated letter, or None. The LAST explicit statement wins (models often restate their final choice)."""
    found = []
    for pat in CHOICE:
        for m in re.finditer(pat, text, re.I | re.M):
            found.append((m.start(), m.group(1).upper()))
    found = [f for f in found if f[1] in letters]
    return max(found)[1] if found else None


def score_choice(text, gold, letters="ABCD"):
    pred = extract_choice(text, letters)
    return pred, pred is not None and pred == gold.strip().upper()


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

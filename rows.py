"""
Training rows for the two training stages. A row always has `question` and `answer`; each agent learns the text of
its role's target field (patterns.ROLES): planner <- plan, critic <- refined_plan, solver / summarizer / learner /
reflector / tool-caller <- answer, distillation expert <- refined_plan, mixture specialists <- hie_<domain>_expert.

Sources:
- a local .jsonl, .json list, or .json object {"data": [...]} (the wrapped form of the authors' released sets):
  Sequential-*   {question, plan, refined_plan, answer}
  Mixture-*      {question, answer, hie_math_expert | hie_code_expert | hie_science_expert, domain, ...}
                 (stage 1 trains a specialist on the rows of its own domain: `domain` is math, code or science)
  Distillation-* {question, refined_plan, answer, ...}
  Deliberation   {question, answer, ...}
  Extra fields are kept; a row that lacks a field some agent needs is an error naming the file and line.
- `gsm8k` (the offline default), derived from GSM8K train (data/gsm8k, MIT) without inventing anything:
      refined_plan = the worked steps as "Step k: ..." lines (calculator annotations <<...>> removed)
      plan         = the same steps with each computed result replaced by "?": what to compute, not the results
      answer       = the worked steps followed by "The final answer is \\boxed{N}."
  so planner, critic and solver learn three different texts; every row has domain "math".
"""
import json
import os
import re

import tasks
from errors import UserError
from files import read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIRED = ("question", "answer")
ARITH_TRAIN = 2000  # generated training rows of arith2 (tasks.py); a run draws its batches from them


class DataError(UserError):
    """A data file the user passed is not usable; the message names the file, the line and the fix."""


def gsm8k_row(raw):
    steps, final = raw["answer"].rsplit("####", 1)
    final = final.strip().replace(",", "")
    lines = [l.strip() for l in steps.strip().splitlines() if l.strip()]
    worked = [re.sub(r"<<[^>]*>>", "", l) for l in lines]
    # "48/2 = <<48/2=24>>24 clips" -> "48/2 = ? clips": the computation stays, its result goes
    planned = [re.sub(r"<<[^=>]*=([^>]*)>>\s*\$?\1", "?", l) for l in lines]
    planned = [re.sub(r"<<[^>]*>>", "", l) for l in planned]
    number = lambda ls: "\n".join(f"Step {k}: {l}" for k, l in enumerate(ls, 1))
    return {"question": raw["question"].strip(), "plan": number(planned), "refined_plan": number(worked),
            "answer": "\n".join(worked) + f"\nThe final answer is \\boxed{{{final}}}.", "final": final,
            "domain": "math"}


def read_rows(path):
    """Yield (line number or index, object) from .jsonl, a .json list, or a .json object {"data": [...]}."""
    if os.path.isdir(path):
        raise DataError(f"--data '{path}' is a folder; pass a .jsonl or .json file")
    if not os.path.exists(path):
        raise DataError(f"data file '{path}' not found; pass 'gsm8k' or a .jsonl/.json file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; pass a .jsonl or .json file") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    if path.endswith(".json"):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if isinstance(rows, dict) and isinstance(rows.get("data"), list):
            rows = rows["data"]
        if not isinstance(rows, list) or not rows:
            raise DataError(f"{path}: expected a non-empty JSON list of rows (or an object with a 'data' list)")
        yield from enumerate(rows, 1)
        return
    yield from read_jsonl(path)


def target_text(row, fields):
    """The first of `fields` that the row has as a non-empty string (None when it has none)."""
    return next((row[k] for k in fields if isinstance(row.get(k), str) and row[k].strip()), None)


def check_row(row, where, targets=()):
    """targets: one tuple of acceptable fields per agent (patterns.role_targets)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with fields {', '.join(REQUIRED)}, got {type(row).__name__}")
    missing = [k for k in REQUIRED if not isinstance(row.get(k), str) or not row[k].strip()]
    missing += [" or ".join(t) for t in dict.fromkeys(targets) if target_text(row, t) is None]
    if missing:
        raise DataError(f"{where}: missing or empty field(s) {', '.join(missing)}; the agents of this pattern "
                        f"learn from them (non-empty strings)")
    return row


def check_domains(rows, domains, source):
    """Stage 1 trains a mixture specialist only on the rows whose `domain` field names it (math, code, science), as
    the paper trains each specialist on its own domain. domains: one per agent, None for an agent that trains on every
    row. A specialist left with no rows is an error naming the source; rows of other domains train the others only."""
    wanted = [d for d in domains if d is not None]
    for d in wanted:
        if not any(row.get("domain") == d for row in rows):
            raise DataError(f"{source}: no row has domain '{d}', so the {d} specialist would learn from nothing; "
                            f"give each row a 'domain' field ({', '.join(wanted)})")
    return rows


def load_rows(source="gsm8k", split="train", targets=()):
    """'gsm8k' (derived, see above), 'arith2' (generated, tasks.py; split "test" is evaluate.py's held-out set) or a
    path to a .jsonl/.json file; every row checked for `targets`."""
    if source == "arith2":
        made = tasks.arith_rows(ARITH_TRAIN, "train") if split == "train" else \
            tasks.arith_rows(tasks.ARITH_TEST, "held-out")
        return [check_row(r, f"arith2 row {n}", targets) for n, r in enumerate(made, 1)]
    if source == "gsm8k":
        path = os.path.join(HERE, "data", "gsm8k", f"{split}.jsonl")
        return [check_row(gsm8k_row(r), f"{path}, line {n}", targets) for n, r in read_rows(path)]
    return [check_row(r, f"{source}, line {n}", targets) for n, r in read_rows(source)]


# A synthetic task for the latent-channel proof (train_outer.py --data secret): agent 1 alone reads a secret word,
# the other agents must name it from agent 1's latents only (a row's question holds one text per agent). Prompts are
# phrased in several ways; the phrasings after the first SECRET_TRAINED are held out from training.
SECRET_WORDS = ["apple", "river", "tiger", "violin", "candle", "rocket", "garden", "winter"]
SECRET_PHRASINGS = [
    "The secret word is {w}. Remember it.", "Remember this word: {w}.", "Your word is {w}.",
    "Keep this word in mind: {w}.", "Here is a word to pass on: {w}.", "Memorise the word {w}.",
    "The password today is {w}.", "Think about the word {w}.",
]
SECRET_ASK = "Another agent was told a secret word. What is the word? Answer with the word only."
SECRET_TRAINED = 6  # phrasings seen in training; the other 2 test that the channel carries the word, not the wording


def secret_rows(agents=2, held_out=False):
    """Rows of the secret-word task for `agents` agents: agent 1 reads the phrasing, every other agent SECRET_ASK."""
    phr = SECRET_PHRASINGS[SECRET_TRAINED:] if held_out else SECRET_PHRASINGS[:SECRET_TRAINED]
    # the target is boxed, as the solver's closing line asks: a bare word would fight that instruction (measured:
    # 50% held-out after 80 steps with the bare word, 100% boxed)
    return [{"question": [p.format(w=w)] + [SECRET_ASK] * (agents - 1), "answer": f"\\boxed{{{w}}}", "final": w}
            for p in phr for w in SECRET_WORDS]

"""
Training rows for the two training stages: {question, plan, refined_plan, answer}.

- Any local .jsonl / .json file with those fields (the format of the authors' released sets, e.g.
  RecursiveMAS/Sequential-Math). A malformed row is an error that names the file and line; nothing is dropped silently.
- `gsm8k` (the offline default): derived from GSM8K train (data/gsm8k, MIT) without inventing anything:
      plan = refined_plan = the worked steps, calculator annotations <<...>> removed
      answer = the same steps followed by "The final answer is \\boxed{N}."
Role -> target: planner <- plan, critic <- refined_plan, solver <- answer (agents.ROLES).
"""
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS = ("question", "plan", "refined_plan", "answer")


class DataError(ValueError):
    pass


def gsm8k_row(raw):
    steps, final = raw["answer"].rsplit("####", 1)
    steps = re.sub(r"<<[^>]*>>", "", steps).strip()
    final = final.strip().replace(",", "")
    return {"question": raw["question"].strip(), "plan": steps, "refined_plan": steps,
            "answer": f"{steps}\nThe final answer is \\boxed{{{final}}}.", "final": final}


def read_jsonl(path):
    """Yield (line number, object) from a .jsonl file, or from a .json file holding a list."""
    if not os.path.exists(path):
        raise DataError(f"data file '{path}' not found")
    if path.endswith(".json"):
        with open(path) as f:
            rows = json.load(f)
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows")
        yield from enumerate(rows, 1)
        return
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {n}: not valid JSON ({e.msg})") from None


def check_row(row, where):
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with fields {', '.join(FIELDS)}, got {type(row).__name__}")
    missing = [k for k in FIELDS if not isinstance(row.get(k), str) or not row[k].strip()]
    if missing:
        raise DataError(f"{where}: missing or empty field(s) {', '.join(missing)}; every row needs "
                        f"{', '.join(FIELDS)} as non-empty strings")
    return row


def load_rows(source="gsm8k", split="train"):
    """'gsm8k' (derived, see above) or a path to a .jsonl/.json file of {question, plan, refined_plan, answer}."""
    if source == "gsm8k":
        path = os.path.join(HERE, "data", "gsm8k", f"{split}.jsonl")
        return [check_row(gsm8k_row(r), f"{path}, line {n}") for n, r in read_jsonl(path)]
    return [check_row(r, f"{source}, line {n}") for n, r in read_jsonl(source)]


# A synthetic task for the latent-channel proof (train_outer.py --task secret): agent 1 alone reads a secret word,
# the last agent must name it from agent 1's latents only. Prompts are phrased in several ways; the last
# few phrasings are held out from training.
SECRET_WORDS = ["apple", "river", "tiger", "violin", "candle", "rocket", "garden", "winter"]
SECRET_PHRASINGS = [
    "The secret word is {w}. Remember it.", "Remember this word: {w}.", "Your word is {w}.",
    "Keep this word in mind: {w}.", "Here is a word to pass on: {w}.", "Memorise the word {w}.",
    "The password today is {w}.", "Think about the word {w}.",
]
SECRET_ASK = "Another agent was told a secret word. What is the word? Answer with the word only."


def secret_rows(held_out=False):
    phr = SECRET_PHRASINGS[6:] if held_out else SECRET_PHRASINGS[:6]
    return [{"question": {"first": p.format(w=w), "last": SECRET_ASK}, "answer": w, "final": w}
            for p in phr for w in SECRET_WORDS]

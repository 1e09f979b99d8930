"""
Generated tasks: made from a seed, each split into a training part and a held-out part that share no payload, no
number triple and no phrasing, so a held-out score measures what was learned, not what was seen.

  payload  (scripts/capacity.py)  agent 1 alone reads a payload, k digits or k words from WORDS, in one of
           PHRASINGS; the last agent's prompt is ASK for every row, so whatever it writes back about the payload
           came through agent 1's latents. Target: \\boxed{payload}; scored as a short answer, exact match.
  arith2   (evaluate.py --benchmark arith2; rows.load_rows("arith2") for the trainers)  two-step arithmetic word
           problems from ARITH_TEMPLATES, e.g. ((a + b) - c) marbles; rows carry a plan ("Step 1: 7 + 5 = ?"), the
           worked steps and the boxed answer, as rows.gsm8k_row does for GSM8K.

Splits: a payload or number triple is held out when the first bytes of its SHA-256 say so (HELD_OUT_SHARE of all
of them, the same on every machine); phrasings and templates are split by position, the last ones held out.
"""
import hashlib
import math
import random

HELD_OUT_SHARE = 5  # one payload (or triple) in 5 is held out

# ---- payloads: what a latent channel carries ---------------------------------------------------------------------

WORDS = ["apple", "river", "tiger", "violin", "candle", "rocket", "garden", "winter",
         "orange", "castle", "pepper", "silver", "monkey", "island", "button", "forest",
         "yellow", "doctor", "pillow", "bridge", "dragon", "hammer", "planet", "rabbit",
         "summer", "window", "cookie", "finger", "jacket", "lemon", "mirror", "pencil"]
FAMILIES = {"digits": (list("0123456789"), ""), "words": (WORDS, " ")}  # (alphabet, separator)
PHRASINGS = ["The message is: {p}.", "Remember this: {p}.", "Pass this on: {p}.", "Your message reads {p}.",
             "Keep this in mind: {p}.", "Memorise it: {p}.",
             # held out
             "Here is what to send: {p}.", "The secret is {p}."]
TRAINED_PHRASINGS = 6
ASK = "Another agent read a message. What was it? Answer with the message only, in \\boxed{}."


def held_out(key):
    """Whether a payload or number triple belongs to the held-out part (a fixed hash, not Python's salted one)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % HELD_OUT_SHARE == 0


def bits(family, k):
    """The information in a uniformly drawn payload: k log2(alphabet size) bits."""
    return k * math.log2(len(FAMILIES[family][0]))


def payloads(family, k, split):
    """Every k-symbol payload of a split, in order, when there are few (k = 1); None when there are too many."""
    alphabet, sep = FAMILIES[family]
    if len(alphabet) ** k > 10_000:
        return None
    every = [""]
    for _ in range(k):
        every = [f"{p}{sep if p else ''}{a}" for p in every for a in alphabet]
    return [p for p in every if held_out(f"payload:{family}:{p}") == (split == "held-out")]


def draw_payload(family, k, split, rng):
    alphabet, sep = FAMILIES[family]
    while True:
        p = sep.join(rng.choice(alphabet) for _ in range(k))
        if held_out(f"payload:{family}:{p}") == (split == "held-out"):
            return p


def payload_row(family, k, payload, phrasing, agents=2):
    """One row: agent 1 reads the phrased payload, every other agent ASK; the answer is the boxed payload."""
    return {"question": [phrasing.format(p=payload)] + [ASK] * (agents - 1), "answer": f"\\boxed{{{payload}}}",
            "final": payload, "family": family, "k": k}


def payload_rows(family, k, n, split="train", seed=0, agents=2):
    """n rows of k-symbol payloads. Training rows may repeat a payload; held-out rows have distinct payloads (at most
    as many as the split has), each with a held-out phrasing, so a row's answer belongs to that row alone."""
    if family not in FAMILIES:
        raise ValueError(f"unknown payload family {family!r}; use one of {', '.join(FAMILIES)}")
    rng = random.Random(f"payload:{family}:{k}:{split}:{seed}")
    phrasings = PHRASINGS[:TRAINED_PHRASINGS] if split == "train" else PHRASINGS[TRAINED_PHRASINGS:]
    if split == "train":
        picked = [draw_payload(family, k, split, rng) for _ in range(n)]
    else:
        every = payloads(family, k, split)
        if every is not None:
            picked = rng.sample(every, min(n, len(every)))
        else:
            seen, picked = set(), []
            while len(picked) < n:
                p = draw_payload(family, k, split, rng)
                if p not in seen:
                    seen.add(p)
                    picked.append(p)
    return [payload_row(family, k, p, rng.choice(phrasings), agents) for p in picked]


# ---- arith2: two-step arithmetic word problems ---------------------------------------------------------------------

# (first operation, second operation, story): the answer is (a op1 b) op2 c. The last HELD_OUT_TEMPLATES are held
# out; each repeats a training template's operations in a story the trainers never read.
ARITH_TEMPLATES = [
    ("+", "-", "Sam has {a} marbles. He buys {b} more and then gives {c} to a friend. How many marbles does Sam have "
               "now?"),
    ("+", "+", "A library has {a} books. It buys {b} new books in May and {c} more in June. How many books does it "
               "have now?"),
    ("-", "-", "A baker makes {a} rolls. She sells {b} in the morning and {c} in the afternoon. How many rolls are "
               "left?"),
    ("*", "+", "There are {a} boxes with {b} pens in each, and {c} loose pens. How many pens are there in all?"),
    ("*", "-", "A farmer plants {a} rows of {b} trees. Then {c} of the trees die. How many trees are still alive?"),
    ("-", "+", "A bus carries {a} people. At the first stop {b} get off and {c} get on. How many people are on the "
               "bus now?"),
    ("+", "*", "Tom has {a} red cards and {b} blue cards. Each card is worth {c} points. How many points are his "
               "cards worth?"),
    ("-", "-", "A jar holds {a} cookies. Mia eats {b} of them and her brother eats {c}. How many cookies are left in "
               "the jar?"),
    # held out
    ("+", "-", "A tank holds {a} litres of water. Then {b} litres are added and {c} litres are used. How many litres "
               "are in the tank now?"),
    ("*", "+", "A class has {a} tables with {b} chairs at each, plus {c} extra chairs. How many chairs are there?"),
    ("-", "+", "A parking lot has {a} cars. Then {b} cars leave and {c} cars arrive. How many cars are in the lot "
               "now?"),
    ("+", "*", "Ann buys {a} small bags and {b} large bags. Every bag holds {c} sweets. How many sweets does she "
               "get?"),
]
HELD_OUT_TEMPLATES = 4
ARITH_TEST = 300  # held-out questions in evaluate.py's arith2 (their first 200: the small Table 3)
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


def draw_numbers(op1, op2, rng):
    """Numbers small enough for a small model, every intermediate and the answer positive."""
    while True:
        if op1 == "*":
            a, b, c = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 30)
        elif op2 == "*":
            a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(2, 6)
        else:
            a, b, c = rng.randint(10, 60), rng.randint(2, 30), rng.randint(2, 30)
        first = OPS[op1](a, b)
        if first > 0 and OPS[op2](first, c) > 0:
            return a, b, c


def arith_row(template, a, b, c):
    op1, op2, story = template
    first = OPS[op1](a, b)
    final = OPS[op2](first, c)
    show = {"*": "x"}.get
    step1, step2 = f"{a} {show(op1, op1)} {b}", f"{first} {show(op2, op2)} {c}"
    return {"question": story.format(a=a, b=b, c=c), "plan": f"Step 1: {step1} = ?\nStep 2: ? {show(op2, op2)} {c} = ?",
            "refined_plan": f"Step 1: {step1} = {first}\nStep 2: {step2} = {final}",
            "answer": f"{step1} = {first}. {step2} = {final}.\nThe final answer is \\boxed{{{final}}}.",
            "final": str(final), "numbers": [a, b, c], "domain": "math"}


def arith_rows(n, split="train", seed=0):
    """n word problems of a split: its templates, its number triples (held out by hash), drawn from the seed."""
    rng = random.Random(f"arith2:{split}:{seed}")
    cut = len(ARITH_TEMPLATES) - HELD_OUT_TEMPLATES
    templates = ARITH_TEMPLATES[:cut] if split == "train" else ARITH_TEMPLATES[cut:]
    rows = []
    while len(rows) < n:
        template = rng.choice(templates)
        a, b, c = draw_numbers(template[0], template[1], rng)
        if held_out(f"arith2:{a},{b},{c}") == (split == "held-out"):
            rows.append(arith_row(template, a, b, c))
    return rows

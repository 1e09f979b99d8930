"""
Tools of the deliberation pattern's tool-caller (paper Table 1): <python>code</python> and <search>query</search>,
and the decoding loop that calls them.

  python   runs in sandbox.py (bubblewrap: namespaces, read-only system, capped tmpfs, limits, no network);
           the result is what the code printed, or its error, or that it timed out.
  search   ranks passages of a LOCAL document collection (a JSONL file of {"title", "text"} rows) by a simple
           lexical score (BM25); with no collection configured it says so, never a made-up result.
"""
import math
import re
from collections import Counter

import torch

from errors import UserError
from files import read_jsonl
from model import pad_left
from sandbox import run_python

TOOL_CALL = re.compile(r"<(python|search)>(.*?)</\1>\s*$", re.S)  # a call that ends the text generated so far
STOP = ["</python>", "</search>"]
MAX_CALLS = 5


def _words(s):
    return re.findall(r"[a-z0-9]+", s.lower())


def read_docs(path):
    """The passages of a JSONL file, one {"title", "text"} object a line (title optional, both strings).
    UserError with one line naming the file, the line and the fix when it is not that."""
    docs = []
    for n, doc in read_jsonl(path):
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) \
                or not isinstance(doc.get("title", ""), str):
            raise UserError(f"'{path}' line {n} is not a {{\"title\", \"text\"}} object with string values "
                            f"(got {type(doc).__name__}); fix that line")
        docs.append(doc)
    if not docs:
        raise UserError(f"'{path}' holds no passages; pass a JSONL file of {{\"title\", \"text\"}} objects")
    return docs


class Search:
    """BM25 over a JSONL file of passages (read_docs)."""

    def __init__(self, path, k1=1.5, b=0.75):
        self.docs = read_docs(path)
        self.toks = [_words(d.get("title", "") + " " + d.get("text", "")) for d in self.docs]
        self.df = Counter(w for t in self.toks for w in set(t))
        self.avg = sum(map(len, self.toks)) / max(1, len(self.toks))
        self.k1, self.b = k1, b

    def __call__(self, query, k=3):
        q, N = _words(query), len(self.docs)
        scores = []
        for i, t in enumerate(self.toks):
            tf = Counter(t)
            s = sum(math.log(1 + (N - self.df[w] + 0.5) / (self.df[w] + 0.5)) * tf[w] * (self.k1 + 1) /
                    (tf[w] + self.k1 * (1 - self.b + self.b * len(t) / self.avg)) for w in q if w in tf)
            scores.append((s, i))
        best = [i for s, i in sorted(scores, reverse=True)[:k] if s > 0]
        if not best:
            return "no matching document"
        return "\n".join(f"[{self.docs[i].get('title', i)}] {self.docs[i].get('text', '')[:500]}" for i in best)


def run_tool(name, body, search=None, timeout=10.0):
    """-> the text that goes back inside <result>...</result>."""
    if name == "python":
        r = run_python(body.strip("\n"), timeout=timeout)
        if not r.executed:  # no sandbox here: the code is not run, and the model is told so
            return f"not run: {r.reason}"
        if r.timed_out:
            return f"error: timed out after {timeout:g} s"
        if not r.ok:
            err = r.stderr.strip().splitlines()
            return "error: " + (err[-1] if err else f"exit status {r.returncode}")
        return r.stdout.strip()[:1000]
    if search is None:
        return "search is not available: no document collection is configured (pass --search-docs FILE.jsonl)"
    return search(body.strip())


def answer_with_tools(bb, embeds, mask, gen, search=None, timeout=10.0):
    """Decode an answer after embeds [B, T, d] (left-padded, mask [B, T]), stopping at each </python> or </search>:
    the tool runs, its result is appended as <result>...</result>, and decoding goes on (at most MAX_CALLS calls).
    Returns (texts, tokens, tool calls per row)."""
    B = embeds.shape[0]
    prompt_rows = [embeds[b, mask[b].bool()] for b in range(B)]  # unpadded [T_b, d]
    texts, counts, calls, active = [""] * B, [0] * B, [[] for _ in range(B)], list(range(B))
    while active:
        rows = [torch.cat([prompt_rows[b], bb.embed(torch.tensor(bb.encode(texts[b]) or [], dtype=torch.long,
                                                                  device=bb.device))]) for b in active]
        new, n = bb.generate(*pad_left(rows, bb.hidden_size, bb.device), stop=STOP, **gen)
        still = []
        for b, t, k in zip(active, new, n):
            texts[b], counts[b] = texts[b] + t, counts[b] + k
            call = TOOL_CALL.search(texts[b])
            if call and len(calls[b]) < MAX_CALLS:
                result = run_tool(call.group(1), call.group(2), search, timeout)
                calls[b].append(dict(tool=call.group(1), input=call.group(2).strip(), result=result))
                texts[b] += f"\n<result>{result}</result>\n"
                still.append(b)
        active = still
    return texts, counts, calls

"""What several test files share: the training rows, the options losses.outer_loss and trainer.train read, a
trained-looking link, a scripted backbone, and the edits a test makes to a checkpoint's files."""
import argparse
import json
import os

import pytest
import torch

import errors
from checkpoints import json_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["tiny-llama", "tiny-qwen"]  # d = 64 and d = 96
# Rows of equal token length (a batch needs no padding, so two ranks' mean of means is the batch's mean); the loss
# ratios the training tests pin were measured on them.
ROWS = [{"question": q, "plan": f"Add or subtract: {q}", "refined_plan": f"Compute {q}", "answer": a}
        for q, a in [("2+2?", "\\boxed{4}"), ("3+5?", "\\boxed{8}"), ("9-7?", "\\boxed{2}"), ("1+5?", "\\boxed{6}")]]
# The course's rows: of different lengths, so a batch is padded and a loss computed by hand must mask it.
UNEVEN_ROWS = [{"question": q, "plan": f"Work out {q}", "refined_plan": f"Compute {q} again", "answer": a}
               for q, a in [("2+2?", "\\boxed{4}"), ("13+25?", "It is \\boxed{38}."), ("9-7?", "\\boxed{2}"),
                            ("1+5?", "\\boxed{6}")]]


def loss_args(**kw):
    """The options losses.outer_loss reads (train_outer.py's)."""
    return argparse.Namespace(**dict(dict(rounds=2, latent_steps=2, latents="rollout", supervise="final",
                                          max_target_tokens=16, teacher_tokens=8, grad_ckpt=False), **kw))


def run_args(out, **kw):
    """The options trainer.train and checkpoints.prepare_out read (the training scripts')."""
    return argparse.Namespace(**dict(dict(lr=1e-3, warmup=1, steps=4, resume=False, overwrite=False, out=str(out),
                                          batch_size=1, seed=0, log_every=100, ckpt_every=2, stage="outer",
                                          agents="tiny-llama", train_inner=False), **kw))


def three_prompts(bb):
    """Three prompts of three lengths: a batch of them is really left-padded."""
    qs = ["Hi.", "What is the capital of France, and why?", "Add 17 and 25, then double it."]
    return [bb.prompt([{"role": "user", "content": q}]) for q in qs]


def perturb(module, scale=0.02, seed=0):
    """A trained-looking link instead of the identity-like start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def scripted(monkeypatch, bb, replies):
    """bb 'writes' replies[k] at its k-th generate call (the last one again after that): (texts, counts, ended) or one
    text for every row. Returns the calls: each row's unpadded input embeddings and max_new_tokens."""
    calls = []

    def generate(embeds, mask, max_new_tokens=256, with_end=False, **kw):
        reply = replies[min(len(calls), len(replies) - 1)]
        texts, counts, ended = reply if isinstance(reply, tuple) else ([reply] * len(embeds), [7] * len(embeds), None)
        calls.append(dict(rows=[embeds[b, mask[b].bool()] for b in range(len(embeds))], max_new_tokens=max_new_tokens))
        return (texts, counts, ended) if with_end else (texts, counts)
    monkeypatch.setitem(vars(bb), "generate", generate)  # undone: the shared backbone gets its own method back
    return calls


def canonical(item):
    """A right answer to a benchmark item, written as its scorer reads it."""
    return {"math": f"Thus \\boxed{{{item['gold']}}}.", "choice": f"The answer is ({item['gold']}).",
            "qa": f"\\boxed{{{item['gold']}}}", "code": f"```python\n{item['gold']}\n```"}[item["kind"]]


def refused(call, *words):
    """call() raises a UserError of one line that holds every word."""
    with pytest.raises(errors.UserError) as e:
        call()
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def flip_byte(path):
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0x01
    open(path, "wb").write(blob)


def edit_link_json(path, recompute=False, sizes=None):
    """Name other agents (tiny-qwen x2) in a link JSON; sizes: their hidden size too, for every link; recompute: then
    put a matching json_sha256 back, as a careful forger would."""
    info = json.load(open(path))
    info.update(agents=["tiny-qwen", "tiny-qwen"], models=["tiny-qwen", "tiny-qwen"])
    if sizes:
        info["hidden_sizes"] = [sizes, sizes]
        for link in info["links"].values():
            link.update(d_in=sizes, d_out=sizes)
    if recompute:
        info["json_sha256"] = json_digest(info)
    os.remove(path)  # a new file: OUT/links.json is a hard link to the step folder's
    json.dump(info, open(path, "w"), indent=1)

"""The paper's other baselines: Mixture-of-Agents and TextGrad (what each agent read and wrote, with scripted
backbones), TextGrad's vote, and LoopLM's Ouro aliases."""
import re

import pytest

import evaluate
import loading
import moa
import recursion
import textgrad
from errors import UserError
from recursion import System

QUESTION = "What is 2+3? Put the final answer in \\boxed{}."


def _script(monkeypatch, module, system, replies):
    """Every backbone of `system` 'writes' replies[name](prompt) (one per row) and reports 5 tokens a row; returns
    the log of (backbone name, prompt) in call order, recorded where prompts become inputs (`module`, recursion)."""
    log, real = [], recursion.build_inputs

    def build(bb, prompts, latents):
        log.extend((bb.name, p) for p in prompts)
        return real(bb, prompts, latents)
    for m in (module, recursion):
        monkeypatch.setattr(m, "build_inputs", build)
    for bb in system.backbones:
        def generate(embeds, mask, with_end=False, _name=bb.name, **kw):
            texts = [replies[_name](log[-embeds.shape[0] + b][1]) for b in range(embeds.shape[0])]
            return (texts, [5] * len(texts)) + (([True] * len(texts),) if with_end else ())
        monkeypatch.setattr(bb, "generate", generate)
    return log


def test_moa_proposers_read_the_layer_before_and_the_aggregator_the_last(monkeypatch):
    system = System(["tiny-llama", "tiny-qwen"])
    layer = lambda p: 1 + max([int(n) for n in re.findall(r"says (\d)", p)] or [0])  # 1 + the layer it reads
    replies = {"tiny-llama": lambda p: f"llama says {layer(p)}", "tiny-qwen": lambda p: f"qwen says {layer(p)}"}
    log = _script(monkeypatch, moa, system, replies)
    rec = moa.run(system, [QUESTION], layers=3, max_new_tokens=8)[0]
    assert [name for name, _ in log] == ["tiny-llama", "tiny-qwen"] * 2 + ["tiny-qwen"]  # proposers x 2, aggregator
    first, second, final = log[:2], log[2:4], log[4][1]
    assert all(QUESTION in p and moa.AGGREGATE not in p for _, p in first)  # layer 1: the question alone
    for _, p in second:  # layer 2: the question, and both layer-1 answers, numbered
        assert QUESTION in p and moa.AGGREGATE in p and "1. llama says 1" in p and "2. qwen says 1" in p
    assert "1. llama says 2" in final and "2. qwen says 2" in final and "says 1" not in final
    assert rec["written"] == ["llama says 1", "qwen says 1", "llama says 2", "qwen says 2", "qwen says 3"]
    assert rec["text"] == "qwen says 3" and rec["latent_steps"] == 0
    assert rec["tokens"] == {"proposer1": 10, "proposer2": 10, "aggregator": 5}


def test_textgrad_evaluates_criticises_and_rewrites_the_answer(monkeypatch):
    system = System(["tiny-llama", "tiny-qwen"])  # the first agent evaluates and criticises, the final one answers

    def qwen(prompt):
        if "<IMPROVED_VARIABLE>" not in prompt:
            return "It is \\boxed{4}."  # answer_0, asked alone
        return f"<IMPROVED_VARIABLE>It is \\boxed{{{5 + prompt.count('again')}}}.</IMPROVED_VARIABLE> trailing"

    def llama(prompt):
        return "Check the sum again." if "<VARIABLE>" not in prompt else "Add 2 and 3 again."
    log = _script(monkeypatch, textgrad, system, {"tiny-llama": llama, "tiny-qwen": qwen})
    rec = textgrad.run(system, [QUESTION], steps=2, max_new_tokens=8)[0]
    names = [n for n, _ in log]
    assert names == ["tiny-qwen"] + ["tiny-llama", "tiny-llama", "tiny-qwen"] * 2  # answer; evaluate, criticise, rewrite
    assert QUESTION in log[0][1] and "VARIABLE" not in log[0][1]  # answer_0: the single agent's prompt
    evaluation, feedback, step = (p for _, p in log[1:4])
    assert QUESTION in evaluation and "Answer by the language model: It is \\boxed{4}." in evaluation
    assert textgrad.EVALUATOR in evaluation and "<VARIABLE>" not in evaluation
    assert "<LM_OUTPUT>Check the sum again.</LM_OUTPUT>" in feedback and "<VARIABLE>It is \\boxed{4}.</VARIABLE>" in feedback
    assert "<FEEDBACK>Add 2 and 3 again.</FEEDBACK>" in step and "<VARIABLE>It is \\boxed{4}.</VARIABLE>" in step
    assert "<VARIABLE>It is \\boxed{6}.</VARIABLE>" in log[6][1]  # the second rewrite starts from the first one
    assert rec["candidates"] == ["It is \\boxed{4}.", "It is \\boxed{6}.", "It is \\boxed{6}."]
    assert rec["text"] == "It is \\boxed{6}."  # the tags' content, without what follows them
    assert rec["tokens"] == {"solver": 5, "evaluator": 10, "critic": 10, "optimiser": 10}
    assert textgrad.improved("no tags here", "old") == "no tags here" and textgrad.improved("", "old") == "old"


def test_textgrad_scores_the_most_common_prediction():
    item = dict(kind="math", gold="5", question="q", id=0)
    rec = lambda *answers: dict(text=answers[-1], candidates=[f"So \\boxed{{{a}}}." for a in answers])
    pred, ok, extra = evaluate.vote(item, rec(5, 4, 5, 4, 4), 10.0, False)
    assert (pred, ok, extra["votes"]) == ("4", False, {"5": 2, "4": 3})
    assert evaluate.vote(item, rec(4, 5), 10.0, False)[:2] == ("5", True)  # a tie: the latest answer
    assert evaluate.vote(item, dict(text="So \\boxed{5}."), 10.0, False)[:2] == ("5", True)  # no candidates


def test_ouro_aliases_resolve_and_need_their_own_code(monkeypatch):
    assert loading.resolve("ouro-2.6b") == "ByteDance/Ouro-2.6B" and loading.resolve("ouro-1.4b") == "ByteDance/Ouro-1.4B"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"^not available offline: ByteDance/Ouro-2\.6B; .*hf download"):
        loading.check_available(["ouro-2.6b"])
    monkeypatch.setattr(loading, "_hub_reachable", lambda: True)  # as if the hub were there
    with pytest.raises(UserError, match="no 'ouro' architecture.*--trust-remote-code"):
        loading.check_available(["ouro-2.6b"])
    loading.check_available(["ouro-2.6b"], trust_remote_code=True)  # its own code may run: nothing to refuse

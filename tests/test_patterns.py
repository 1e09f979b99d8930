"""The four collaboration patterns on one loop: hand-over shapes, gradients, training, and the deliberation tools."""
import argparse
import json

import pytest
import torch

import losses
import train_outer
from recursion import System
from patterns import TOPOLOGIES, expand_agents
from conftest import needs_smollm
from tools import Search, run_tool

LINEUPS = {  # heterogeneous tiny models (d=64 and d=96)
    "sequential": ["tiny-llama", "tiny-qwen", "tiny-llama"],
    "mixture": ["tiny-llama", "tiny-qwen", "tiny-llama", "tiny-qwen"],
    "distillation": ["tiny-llama", "tiny-qwen"],
    "deliberation": ["tiny-qwen", "tiny-qwen"],
    "debate": ["tiny-llama", "tiny-qwen", "tiny-llama"],
}
ROWS = [{"question": q, "plan": f"Work out {q}", "refined_plan": f"Compute {q}", "answer": a}
        for q, a in [("2+2?", "\\boxed{4}"), ("3+5?", "\\boxed{8}"), ("9-7?", "\\boxed{2}"), ("1+5?", "\\boxed{6}")]]


@pytest.mark.parametrize("pattern", list(TOPOLOGIES))
@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_hand_over_shapes_for_every_pattern(pattern, rounds):
    system = System(LINEUPS[pattern], pattern)
    d = {role: bb.hidden_size for role, bb in zip(system.roles, system.backbones)}
    seen = []
    for name, link in system.outer.items():
        link.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, inp[0].shape, out.shape)))
    B, m = 2, 3
    recs = system.run(["What is 2+3?", "Name a colour."], "latent", rounds=rounds, latent_steps=m, max_new_tokens=2)
    t = system.topology
    assert len(seen) == rounds * len(t.edges) + (rounds - 1) * len(t.feedback)
    for name, shape_in, shape_out in seen:
        src, dst = name.split("->")
        assert tuple(shape_in) == (B, m, d[src]) and tuple(shape_out) == (B, m, d[dst]), name
    assert all(r["latent_steps"] == m * (rounds * len(system.roles) - 1) for r in recs)


def test_topologies_read_as_who_feeds_whom():
    assert System(LINEUPS["mixture"], "mixture").roles == ["math", "code", "science", "summarizer"]
    t = TOPOLOGIES["mixture"](4)
    assert t.edges == [(0, 3), (1, 3), (2, 3)] and t.feedback == [(3, 0), (3, 1), (3, 2)]
    assert TOPOLOGIES["distillation"](2).edges == [(0, 1)] and TOPOLOGIES["deliberation"](2).feedback == [(1, 0)]
    assert expand_agents("paper-mixture", "sequential") == (
        ["deepseek", "qwen-coder", "mistral", "qwen3.5-2b"], "mixture")


def test_deliberation_roles_share_one_backbone():
    system = System(["tiny-llama", "tiny-llama"], "deliberation")
    assert system.backbones[0] is system.backbones[1]


@pytest.mark.parametrize("pattern", list(TOPOLOGIES))
def test_every_outer_link_of_every_pattern_gets_a_gradient(pattern):
    system = System(LINEUPS[pattern], pattern)
    system.inner.requires_grad_(False)
    args = argparse.Namespace(rounds=2, latent_steps=2, latents="rollout", supervise="final", max_target_tokens=16,
                              grad_ckpt=False)
    losses.outer_loss(system, ROWS[:2], args).backward()
    for name, link in system.outer.items():
        assert sum(p.grad.abs().sum().item() for p in link.parameters() if p.grad is not None) > 0, name


@pytest.mark.parametrize("pattern", ["mixture", "distillation", "deliberation"])  # sequential: test_training.py
def test_outer_training_lowers_the_loss_clearly_for_each_pattern(pattern, tmp_path, monkeypatch):
    """Deterministic; one row, so 30 steps suffice: on correct code the last 3 steps' loss is 0.60 (mixture), 0.74
    (distillation), 0.79 (deliberation) of the first 3's; untrained links stay at 1.0."""
    monkeypatch.setattr(train_outer, "load_rows", lambda *a, **k: ROWS[:1])
    agents = ",".join(LINEUPS[pattern][-3:] if pattern == "mixture" else LINEUPS[pattern])
    argv = ["--agents", agents, "--pattern", pattern, "--steps", "30", "--out", str(tmp_path), "--eval-questions",
            "0", "--rounds", "2", "--latent-steps", "4", "--lr", "3e-2", "--batch-size", "1", "--warmup", "3",
            "--log-every", "1000"]
    assert train_outer.main(argv) == 0
    losses = torch.load(tmp_path / "step-000030" / "state.pt", weights_only=True)["losses"]
    assert sum(losses[-3:]) / sum(losses[:3]) < 0.87, losses


# ---- deliberation tools -------------------------------------------------------------------------------------

def _scripted(system, replies):
    """Make the tool-caller 'write' these replies, one per decoding call, to test the tool loop itself."""
    bb, calls = system.backbones[1], []

    def generate(embeds, mask, stop=(), **kw):
        calls.append(embeds.shape[1])
        return [replies[min(len(calls) - 1, len(replies) - 1)]] * embeds.shape[0], [7] * embeds.shape[0]
    bb.generate = generate
    return calls


@pytest.mark.sandbox
def test_python_tool_call_runs_in_the_sandbox_and_its_result_is_read_back():
    system = System(["tiny-llama", "tiny-llama"], "deliberation")
    try:
        calls = _scripted(system, ["<python>print(123456789 * 987654321)</python>", "So \\boxed{121932631112635269}."])
        rec = system.run(["What is 123456789 * 987654321?"], "latent", rounds=2, latent_steps=2)[0]
    finally:
        del system.backbones[1].generate
    assert rec["tool_calls"] == [dict(tool="python", input="print(123456789 * 987654321)",
                                      result="121932631112635269")]
    assert "<result>121932631112635269</result>" in rec["text"] and rec["text"].endswith("\\boxed{121932631112635269}.")
    assert len(calls) == 2 and calls[1] > calls[0]  # the second decode reads the call and its result
    assert rec["tokens"] == {"toolcaller": 14}


@pytest.mark.sandbox
def test_a_tool_call_that_loops_forever_times_out_and_the_answer_still_comes_back():
    system = System(["tiny-llama", "tiny-llama"], "deliberation", tool_timeout=1.0)
    try:
        _scripted(system, ["<python>while True:\n    pass</python>", "It timed out, so \\boxed{0}."])
        rec = system.run(["Loop?"], "latent", rounds=1, latent_steps=0)[0]
    finally:
        del system.backbones[1].generate
    assert rec["tool_calls"][0]["result"].startswith("error: timed out")
    assert rec["text"].endswith("\\boxed{0}.")


def test_at_most_five_tool_calls():
    system = System(["tiny-llama", "tiny-llama"], "deliberation")
    try:
        _scripted(system, ["<python>print(1)</python>"])  # a model that never stops calling
        rec = system.run(["Again?"], "latent", rounds=1, latent_steps=1)[0]
    finally:
        del system.backbones[1].generate
    assert len(rec["tool_calls"]) == 5


def test_search_tool_ranks_a_local_collection_and_says_when_there_is_none(tmp_path):
    assert "no document collection is configured" in run_tool("search", "capital of France")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in [
        {"title": "Berlin", "text": "Berlin is the capital of Germany."},
        {"title": "Paris", "text": "Paris is the capital and largest city of France."},
        {"title": "Tea", "text": "Tea is a drink."}]))
    out = run_tool("search", "What is the capital of France?", Search(str(docs)))
    assert out.splitlines()[0].startswith("[Paris]")
    assert run_tool("search", "zzz qqq", Search(str(docs))) == "no matching document"


@needs_smollm
@pytest.mark.parametrize("pattern,agents", [("sequential", ["smollm"] * 3), ("mixture", ["smollm"] * 3),
                                            ("distillation", ["smollm"] * 2), ("deliberation", ["smollm"] * 2)])
def test_each_pattern_runs_on_smollm(pattern, agents):
    system = System(agents, pattern)
    assert len({id(bb) for bb in system.backbones}) == 1  # one copy of the weights
    for rounds in (1, 2, 3):
        rec = system.run(["What is 12*7?"], "latent", rounds=rounds, latent_steps=4, max_new_tokens=8)[0]
        assert rec["text"] and rec["latent_steps"] == 4 * (rounds * len(agents) - 1)

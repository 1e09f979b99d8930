"""Core parity and shape tests: model.py, links.py, agents.py on tiny random models of two architectures."""
import os
import subprocess
import sys

import pytest
import torch

from recursion import System, build_inputs, rollout
from loading import load_backbone
from helpers import ROOT, TINY, three_prompts


@pytest.mark.parametrize("name", TINY)
def test_forward_from_embeddings_equals_plain_hf(name):
    bb = load_backbone(name)
    prompt = bb.prompt([{"role": "user", "content": "What is 12*7? Think briefly."}])
    ids = torch.tensor([bb.encode(prompt)])
    embeds, mask = build_inputs(bb, [prompt], {})  # no slots, no latents
    hidden, _ = bb.forward(embeds, mask)
    ours = bb.logits(hidden)
    ref = bb.model(input_ids=ids).logits
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_incremental_forward_with_cache_equals_full(name):
    bb = load_backbone(name)
    ids = torch.tensor([bb.encode("one two three four five six")])
    full, _ = bb.forward(bb.embed(ids), torch.ones_like(ids))
    head, cache = bb.forward(bb.embed(ids[:, :-3]), torch.ones_like(ids[:, :-3]))
    tail, _ = bb.forward(bb.embed(ids[:, -3:]), torch.ones_like(ids), cache)
    torch.testing.assert_close(torch.cat([head, tail], 1), full, rtol=0, atol=1e-5)


def test_latents_are_spliced_into_the_final_agents_input():
    """The solver's input is [prefix, outer(planner's m thoughts), suffix]; with m=0 just [prefix, suffix]."""
    system = System(["tiny-llama", "tiny-qwen"])
    with torch.no_grad():
        (e0, m0), = system.latent_pass(["Hi?"], 1, 0)
        (e3, m3), = system.latent_pass(["Hi?"], 1, 3)
        planner = system.backbones[0]
        thoughts = rollout(planner, system.inner["planner"], *build_inputs(planner, [system.prompt(0, "Hi?", 0)], {}), 3)
        sent = system.outer["planner->solver"](thoughts)  # [1, 3, 96]
    P = len(system.backbones[1].split_slots(system.prompt(1, "Hi?", 0))[0])  # tokens before the slot
    assert e3.shape[1] == e0.shape[1] + 3 and m3.sum() == m0.sum() + 3
    torch.testing.assert_close(e3[:, P:P + 3], sent)
    torch.testing.assert_close(torch.cat([e3[:, :P], e3[:, P + 3:]], 1), e0)


# ---- errors from the command line: exit 2, one line, no traceback (every parse-time check: test_bad_input.py) ----

@pytest.mark.parametrize("script,args,words", [
    ("agents.py", ["--agents", "nosuch"], ["unknown model alias 'nosuch'", "hub id"]),
    ("agents.py", ["--agents", "./no/such/folder"], ["not found"]),
    ("agents.py", ["--agents", "some-org/some-model-not-here"], ["some-org/some-model-not-here", "--agents smollm"]),
    ("agents.py", ["--agents", "tiny-llama", "--question", "  "], ["empty question"]),
    ("agents.py", ["--agents", "some-org/model-a,other-org/model-b"], ["some-org/model-a", "other-org/model-b",
                                                                       "hf download"]),
    ("agents.py", ["--agents", "tiny-qwen,tiny-qwen", "--links", "{ck}"], ["64", "96"]),  # a tiny-llama checkpoint
    ("evaluate.py", ["--limit", "0"], ["--limit"]),
    ("assignments/make.py", ["9", "--out", "/nonexistent-course-dir"], ["unknown assignment '9'", "1, 2, 3, 4, 5, 6"]),
    ("assignments/make.py", ["1", "--out", ROOT], ["not an empty folder"]),
    ("assignments/grade.py", ["x"], ["unknown assignment 'x'"]),
    ("assignments/grade.py", ["1", "--in", "/nonexistent-course-dir"], ["not a copy of the repository"]),
])
def test_cli_errors_are_one_clear_line(script, args, words, tmp_path):
    if "{ck}" in args:
        System(["tiny-llama", "tiny-llama"]).save_links(str(tmp_path / "ck"))
    argv = [sys.executable, os.path.join(ROOT, script), *(a.replace("{ck}", str(tmp_path / "ck")) for a in args)]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                       timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(w in lines[0] for w in words), r.stderr


@pytest.mark.parametrize("name", TINY)
def test_position_ids_under_left_padding_start_at_zero(name):
    """RoPE hides a constant position shift, so check the ids themselves: each row's first real token is position 0,
    also after the KV-cached steps."""
    bb = load_backbone(name)
    embeds, mask = build_inputs(bb, three_prompts(bb), {})
    seen = []
    hook = bb.model.model.rotary_emb.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs.get("position_ids", args[-1]).clone()),
        with_kwargs=True)
    try:
        _, cache = bb.forward(embeds, mask)
        mask2 = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        bb.forward(embeds[:, -1:], mask2, cache)
    finally:
        hook.remove()
    lengths = mask.sum(1)
    for b in range(3):
        real = seen[0][b][mask[b].bool()]
        assert real.tolist() == list(range(int(lengths[b])))
        assert seen[1][b, 0].item() == lengths[b].item()  # the next step continues the row's own count



"""The fast path (fast.py) computes what the eager HF path computes: step by step, on three architectures, on the CPU
(static cache, torch.compile) and, where CUDA exists, with CUDA-graph replay in float32 and bfloat16."""
import pytest
import torch

import fast
from recursion import System, build_inputs, rollout
from loading import load_backbone

ARCHS = ["tiny-llama", "tiny-qwen", "tiny-qwen3"]  # Qwen3: q/k norms and a head size that is not d / heads
cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="needs a CUDA device: CUDA graphs are captured and replayed only there "
                                 "(run on a GPU machine: python -m pytest tests/test_fast.py)")


def _batch(bb, device="cpu", B=2, T=7, seed=0):
    """Random input embeddings with left padding (row 0 has 3 pads), never zeros."""
    g = torch.Generator().manual_seed(seed)
    embeds = (0.1 * torch.randn(B, T, bb.hidden_size, generator=g)).to(device, bb.dtype)
    mask = torch.ones(B, T, dtype=torch.long, device=device)
    mask[0, :3] = 0
    return embeds, mask


def _steps_against_eager(bb, mode, steps=5, max_len=32):
    """Feed the same random inputs one at a time to HF's cached forward and to a StaticDecoder; return the worst
    relative error of any step (the inputs are teacher-forced, not fed back: a random latent loop is chaotic,
    docs/method.md)."""
    embeds, mask = _batch(bb, bb.device)
    worst = 0.0
    with torch.no_grad():
        ref, cache = bb.forward(embeds, mask)
        dec = fast.StaticDecoder(bb, 2, max_len, mode)
        out = dec.start(embeds, mask)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the prefill IS the eager forward
        g = torch.Generator().manual_seed(1)
        for _ in range(steps):
            e = (0.1 * torch.randn(2, 1, bb.hidden_size, generator=g)).to(bb.device, bb.dtype)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            ref, cache = bb.forward(e, mask, cache)
            dec.out.fill_(float("nan"))  # poisoned: every element must be written by the step
            out = dec.step(e)
            assert torch.isfinite(out).all()
            worst = max(worst, ((out.float() - ref.float()).norm() / ref.float().norm()).item())
    return worst


@pytest.mark.parametrize("name", ARCHS)
def test_static_step_equals_hf_cached_forward(name):
    assert _steps_against_eager(load_backbone(name), "static") < 1e-6


def test_compiled_step_equals_eager():
    """torch.compile(fullgraph=True) of the step: no graph breaks, same numbers (CPU inductor here, ~30 s)."""
    assert _steps_against_eager(load_backbone("tiny-qwen"), "compile", steps=3) < 1e-5


def test_two_systems_keep_their_own_decoder(monkeypatch):
    """Two Systems on the same shared backbones, one eager and one on the static fast path, in one process: each
    keeps its own decoder (nothing is stored on the shared backbone), and both compute the same rollouts and answers."""
    eager = System(["tiny-llama", "tiny-qwen"], fast="off")
    quick = System(["tiny-llama", "tiny-qwen"], fast="static")
    assert quick.backbones[0] is eager.backbones[0] and quick.backbones[1] is eager.backbones[1]
    with torch.no_grad():
        for p in eager.parameters():  # trained-looking links, not the identity-like init
            p.add_(0.02 * torch.randn_like(p))
    quick.load_state_dict(eager.state_dict())
    built, real = [], fast.StaticDecoder
    monkeypatch.setattr(fast, "StaticDecoder", lambda bb, *a: built.append(bb.name) or real(bb, *a))
    for bb in eager.backbones:
        fast.decoders(bb).clear()
    qs = ["What is 2+3?", "Name a colour."]
    ref = eager.run(qs, "latent", 2, 4, max_new_tokens=12) + eager.run(qs[:1], "text", 1, 4, max_new_tokens=12)
    assert built == []  # the eager System never steps through the fast path, though the fast one was built after it
    out = quick.run(qs, "latent", 2, 4, max_new_tokens=12) + quick.run(qs[:1], "text", 1, 4, max_new_tokens=12)
    assert set(built) == {bb.name for bb in quick.backbones}
    n = len(built)
    again = eager.run(qs, "latent", 2, 4, max_new_tokens=12)
    assert len(built) == n and [r["text"] for r in again] == [r["text"] for r in ref[:2]]  # still eager
    assert [r["written"] for r in out] == [r["written"] for r in ref]
    bb, prompts = eager.backbones[0], [eager.prompt(0, q, 0) for q in qs]
    embeds, mask = build_inputs(bb, prompts, {})
    with torch.no_grad():
        torch.testing.assert_close(rollout(bb, quick.inner["planner"], embeds, mask, 4, fast.choose("static")),
                                   rollout(bb, eager.inner["planner"], embeds, mask, 4), rtol=1e-5, atol=1e-5)


def test_decoder_reuse_forgets_the_previous_prompt():
    """A decoder is kept per shape and reused: stale cache columns from a longer earlier run must not leak. The
    identity link hands the step's own output back in (a buffer the next step overwrites, were it not copied)."""
    bb = load_backbone("tiny-llama")
    inner, static = torch.nn.Identity(), fast.choose("static")
    embeds, mask = _batch(bb, T=9)
    short_e, short_m = embeds[:, 4:], mask[:, 4:]
    fast.decoders(bb).clear()
    with torch.no_grad():
        ref = rollout(bb, inner, short_e, short_m, 3)
        rollout(bb, inner, embeds, mask, 20, static)           # fills many columns
        again = rollout(bb, inner, short_e, short_m, 3, static)  # same shape bucket: the same decoder object
        assert len(fast.decoders(bb)) == 1
    torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)


def test_decoder_refuses_overflow_and_wrong_shapes():
    bb = load_backbone("tiny-qwen")
    embeds, mask = _batch(bb, T=6)
    dec = fast.StaticDecoder(bb, 2, 8, "static")
    with pytest.raises(ValueError, match="batch 2"):
        dec.start(embeds[:1], mask[:1])
    dec.start(embeds, mask)
    dec.step(embeds[:, :1])
    dec.step(embeds[:, :1])
    with pytest.raises(ValueError, match="static KV cache full"):
        dec.step(embeds[:, :1])


def test_fast_modes_fall_back_with_a_note(capsys):
    bb = load_backbone("tiny-llama")
    assert fast.resolve_mode("auto", bb) == "off"  # CPU: eager
    assert fast.resolve_mode("graph", bb) == "off"
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err
    bb.config.model_type = "gemma3"  # an architecture without a fast path
    try:
        assert fast.resolve_mode("static", bb) == "off"
        assert "no fast path" in capsys.readouterr().err
    finally:
        bb.config.model_type = "llama"
    with pytest.raises(Exception, match="unknown --fast"):
        System(["tiny-llama"], fast="turbo")


def test_a_decoder_that_cannot_be_built_falls_back_to_eager(monkeypatch, capsys):
    """A graph capture or compilation that fails on some machine leaves answers correct: a note, then eager."""
    bb = load_backbone("tiny-llama")
    embeds, mask = _batch(bb)
    ref = bb.generate(embeds, mask, max_new_tokens=6)

    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(fast, "StaticDecoder", broken)
    fast.decoders(bb).clear()
    try:
        assert bb.generate(embeds, mask, max_new_tokens=6, decoder=fast.choose("graph")) == ref
        assert fast.decoder(bb, 2, 16, "graph") is None  # it stays eager, without trying again
    finally:
        fast._BROKEN.discard(bb)
    assert "using the eager path" in capsys.readouterr().err


# ---- CUDA only ----------------------------------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("name", ARCHS)
def test_cuda_graph_step_equals_eager(name, dtype, tol):
    assert _steps_against_eager(load_backbone(name, "cuda", dtype), "graph") < tol


@cuda
def test_cuda_compiled_graph_step_equals_eager():
    """torch.compile + CUDA-graph replay, bfloat16 (one architecture: each compilation takes a while)."""
    assert _steps_against_eager(load_backbone("tiny-qwen3", "cuda", torch.bfloat16), "compile") < 2e-2

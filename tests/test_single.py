"""The trained baselines (train_single.py): the final agent alone, LoRA or full; its checkpoints and trained_backbone."""
import json
import re
import sys

import pytest
import torch

import losses
import baselines
import recursion
import train_single
from recursion import System
from conftest import kill_and_resume
from loading import load_backbone
from baselines import Tuned, trained_backbone
from helpers import ROOT, ROWS, refused

FAMILIES = ["tiny-llama", "tiny-qwen", "tiny-gemma3", "tiny-qwen3.5"]


def _snapshot(bb):
    return {n: p.detach().clone() for n, p in bb.model.named_parameters()}


def _same(bb, snap):
    return all(torch.equal(p, snap[n]) for n, p in bb.model.named_parameters())


def _hidden(bb, text="Question: 2+2?"):
    ids = torch.tensor([bb.encode(text)])
    with torch.no_grad():
        return bb.forward(bb.embed(ids), torch.ones_like(ids))[0]


def test_training_prompt_is_the_single_baselines(monkeypatch):
    seen = []
    real = recursion.build_inputs
    monkeypatch.setattr(recursion, "build_inputs", lambda bb, prompts, lat: seen.append(list(prompts)) or
                        real(bb, prompts, lat))
    System(["tiny-qwen", "tiny-llama"]).run(["2+2?", "3+5?"], mode="single", max_new_tokens=1)
    monkeypatch.setattr(losses, "build_inputs", lambda bb, prompts, lat: seen.append(list(prompts)) or
                        real(bb, prompts, lat))
    solo = System(["tiny-llama"])
    losses.single_loss(solo, Tuned(solo.backbones[0], "full").backbone, ROWS[:2], 8)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert "Question:\n2+2?" in seen[1][0] and "<|slot:" not in seen[1][0]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gradients_reach_what_the_method_trains_and_never_the_cached_backbone(method):
    bb = load_backbone("tiny-llama")
    before = _snapshot(bb)
    tuned = Tuned(bb, method)
    solo = System(["tiny-llama"])
    losses.single_loss(solo, tuned.backbone, ROWS[:2], 16).backward()
    opt = torch.optim.AdamW(list(tuned.params.values()), lr=1e-2)
    opt.step()
    got = {n for n, p in tuned.backbone.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if method == "lora":
        assert got and all("lora_" in n for n in got) and {n for n in tuned.params} >= got
        assert {n for n in tuned.params if ".lora_B." in n} <= got  # every adapter learns (lora_A: 0 until B moves)
    else:
        assert got == set(tuned.params) and len(got) == len(before)  # every weight (tied ones once)
    assert _same(bb, before) and all(p.grad is None and not p.requires_grad for p in bb.model.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_adapts_every_linear_layer_of_every_decoder_layer(name):
    """As the paper's baseline: attention and MLP projections of every layer, whatever the family calls them (on
    Qwen3.5, q_proj/v_proj exist only in the full-attention layers); never a vision tower, the embeddings or the head."""
    bb = load_backbone(name)
    want = {i: {n for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}  # layer index -> its linears
            for i, layer in enumerate(bb.lm.layers)}
    assert all(any("attn" in n for n in ns) and any("mlp" in n for n in ns) for ns in want.values())
    got = {}
    for n in Tuned(bb, "lora").params:
        where = re.fullmatch(r"model\.(?:language_model\.)?layers\.(\d+)\.(.+)\.lora_[AB]\.default\.weight", n)
        assert where, f"an adapter outside the decoder layers: {n}"
        got.setdefault(int(where.group(1)), set()).add(where.group(2))
    assert got == want and sorted(got) == list(range(bb.config.num_hidden_layers))


def test_lora_on_the_qwen3_5_4b_shape_trains_the_papers_share():
    """Paper Table 5 / §5: LoRA trains 15.92M parameters, 0.37% of Qwen3.5-4B. Counted on the real config's shape,
    built on the meta device (no weights, no download), with the same add_lora the baseline uses."""
    import transformers
    with torch.device("meta"):
        qwen = transformers.Qwen3_5ForConditionalGeneration(transformers.Qwen3_5Config(**baselines.QWEN3_5_4B))
    total = sum(p.numel() for p in qwen.parameters())
    lora = baselines.add_lora(qwen)
    trained = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert trained == pytest.approx(15.92e6, rel=0.1) and trained / total == pytest.approx(0.0037, rel=0.1)


def _trained(bb, method, path, seed=0):
    """A Tuned copy with every trained tensor random (LoRA B starts at zero, which would hide a dropped adapter)."""
    tuned = Tuned(bb, method)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.params.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (p if method == "full" else 0))
    tuned.save(path)
    tuned.backbone.model.eval()
    return tuned


def test_trained_backbone_merges_the_adapter_into_a_new_backbone(tmp_path):
    bb = load_backbone("tiny-llama")
    before, plain = _snapshot(bb), _hidden(bb)
    tuned = _trained(bb, "lora", str(tmp_path / "adapter"))
    new = trained_backbone(bb, "lora", str(tmp_path))  # a run folder works as well as the path
    assert new is not bb and new.model is not bb.model and _same(bb, before)
    assert not any(p.requires_grad for p in new.model.parameters())
    assert not any("lora_" in n for n, _ in new.model.named_parameters())  # merged, not wrapped
    torch.testing.assert_close(_hidden(new), _hidden(tuned.backbone), rtol=1e-5, atol=1e-5)
    assert (_hidden(new) - plain).abs().max() > 1e-3  # the adapter changed the model
    torch.testing.assert_close(_hidden(bb), plain, rtol=0, atol=0)


def test_trained_backbone_loads_full_weights_bit_exactly(tmp_path):
    bb = load_backbone("tiny-llama")
    before = _snapshot(bb)
    tuned = _trained(bb, "full", str(tmp_path / "weights"))
    new = trained_backbone(bb, "full", str(tmp_path / "weights"))
    for n, p in new.model.named_parameters():
        assert torch.equal(p, tuned.backbone.model.get_parameter(n)), n
    assert not torch.equal(new.model.get_input_embeddings().weight, bb.model.get_input_embeddings().weight)
    assert _same(bb, before)


def _refused(bb, method, path, *words):
    refused(lambda: trained_backbone(bb, method, path), *words)


def test_mismatched_missing_or_corrupt_checkpoints_are_refused(tmp_path):
    llama = load_backbone("tiny-llama")
    _trained(llama, "lora", str(tmp_path / "adapter"))
    _trained(llama, "full", str(tmp_path / "weights"))
    _refused(load_backbone("tiny-qwen3"), "lora", str(tmp_path / "adapter"), "tiny-llama", "tiny-qwen3")  # same d
    _refused(load_backbone("tiny-qwen"), "full", str(tmp_path / "weights"), "tiny-llama")
    _refused(llama, "lora", str(tmp_path / "weights"), "full checkpoint, not lora")
    _refused(llama, "full", str(tmp_path / "nothing"), "no checkpoint")
    _refused(llama, "dora", str(tmp_path / "adapter"), "unknown method 'dora'")
    blob = bytearray((tmp_path / "weights.safetensors").read_bytes())
    blob[len(blob) // 2:len(blob) // 2 + 64] = bytes(64)
    (tmp_path / "weights.safetensors").write_bytes(blob)
    _refused(llama, "full", str(tmp_path / "weights"), "weights.safetensors", "sha256")


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    """What needs the model to check: a module it lacks, a pattern other than sequential (parsing: test_bad_input)."""
    for argv, words in [(["--agents", "tiny-llama", "--lora-targets", "nope_proj"], ["nope_proj", "tiny-llama"]),
                        (["--agents", "tiny-llama,tiny-llama", "--pattern", "mixture"], ["--pattern sequential"])]:
        assert train_single.main(argv + ["--out", str(tmp_path / "x"), "--steps", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and all(w in err[0] for w in words), err


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, method):
    """LoRA dropout is on: the resumed run must also draw the same random numbers."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))

    def cmd(out, *extra):
        return [sys.executable, "train_single.py", "--agents", "tiny-llama", "--method", method, "--data", str(data),
                "--steps", "12", "--ckpt-every", "4", "--lr", "1e-2", "--log-every", "100", "--out", str(out), *extra]
    whole = kill_and_resume(cmd, tmp_path, ROOT, f"{baselines.FILE[method]}.safetensors")  # bit-identical tensors
    assert "loss (first -> last" in whole.stdout and f"method                             {method}" in whole.stdout
    if method == "lora":  # the trainable count and its share of the model, printed at start
        bb = load_backbone("tiny-llama")
        n, total = sum(p.numel() for p in Tuned(bb, "lora").params.values()), bb.num_params()
        assert f"training {n:,} LoRA adapter parameters ({100 * n / total:.2f}% of {total:,} " in whole.stdout
        assert "14 linear layers in 2 of 2 decoder layers" in whole.stdout  # 7 projections a layer

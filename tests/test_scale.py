"""The link scale rule (docs/method.md §2): an untrained link writes at the size of what the RECEIVING model actually
consumes, the RMS of embed() on real token ids. Gemma 3 multiplies its embeddings by sqrt(d) inside the embedding
module, so the raw embedding matrix is sqrt(d) too small a yardstick there (8x on tiny-gemma3, 50x at d=2560)."""
import pytest
import torch

from recursion import System, rollout

FAMILIES = ["tiny-llama", "tiny-qwen", "tiny-gemma3", "tiny-qwen3.5"]
VARIANTS = ["2layer_ln_res", "2layer_res"]  # after a LayerNorm (scale = out_rms), and without (out_rms / in_rms)
# real text, and not the text Backbone.embedding_scales measures on: the yardstick must not be the rule's own number
TEXT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"


def _rms(x):
    return x.float().pow(2).mean().sqrt().item()


def _ids(bb, text=TEXT):
    return torch.tensor([bb.encode(text)], device=bb.device)  # [1, T]


def _consumed_rms(bb):
    """What the model reads: embed() of real token ids, whatever the embedding module multiplies in."""
    with torch.no_grad():
        return _rms(bb.embed(_ids(bb)))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", FAMILIES)
def test_an_untrained_inner_link_writes_at_its_models_embedding_size(name, variant):
    system = System([name], variant=variant)  # one agent: its inner link, last-layer states -> its own inputs
    bb, ids = system.backbones[0], _ids(system.backbones[0])
    with torch.no_grad():
        hidden, _ = bb.forward(bb.embed(ids), torch.ones_like(ids))  # [1, T, d]: its own states on real text
        out = system.inner[system.roles[0]](hidden)  # [1, T, d]
    assert _rms(out) == pytest.approx(_consumed_rms(bb), rel=0.1)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", FAMILIES)
def test_an_untrained_outer_link_writes_at_the_receivers_embedding_size(name, variant):
    sender = FAMILIES[(FAMILIES.index(name) + 1) % len(FAMILIES)]  # another family (tiny-gemma3 sends to tiny-qwen)
    system = System([sender, name], variant=variant)
    src, dst = system.backbones
    ids = _ids(src)
    with torch.no_grad():
        thoughts = rollout(src, system.inner[system.roles[0]], src.embed(ids), torch.ones_like(ids), 4)  # [1, 4, d_a]
        out = system.outer[f"{system.roles[0]}->{system.roles[1]}"](thoughts)  # [1, 4, d_b]
    assert _rms(out) == pytest.approx(_consumed_rms(dst), rel=0.1)

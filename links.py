"""
RecursiveLink: the only trained parameters in RecursiveMAS (docs/method.md §2).

  inner link (inside one agent, d -> d):     last-layer hidden state -> the agent's own next input embedding
  outer link (agent A, d_a -> agent B, d_b): A's latent thoughts     -> B's input-embedding space

Variants (paper Table 4 ablation, plus the released default):
  1layer         R(x) = W1 x
  1layer_res     inner: x + W1 x                         outer: W3 x + W1 x
  2layer         R(x) = W2 gelu(W1 x)
  2layer_res     inner: x + W2 gelu(W1 x)                outer: W3 x + W2 gelu(W1 x)
  2layer_ln_res  inner: LN_post(x + W2 gelu(W1 LN_pre(x)))   outer: LN_tgt(W2 gelu(W1 LN_src(x)) + W3 x)   (default)

Every link multiplies its output by a fixed `scale` (a buffer, not trained): last-layer hidden states are an order of
magnitude larger than input embeddings (SmolLM2: norm ~50 vs ~3, docs/method.md); fed back raw, a rollout collapses.
The scale maps the link's output to the size of the embeddings it stands in for: out_rms after a LayerNorm (whose
output has unit RMS), out_rms / in_rms otherwise. Residual branches start at zero, so an untrained link is
"identity times the right scale".

A checkpoint of a System's links is checkpoints.py's (save_links / load_links).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError

VARIANTS = {  # name: (layers, residual, layer norms)
    "1layer": (1, False, False),
    "1layer_res": (1, True, False),
    "2layer": (2, False, False),
    "2layer_res": (2, True, False),
    "2layer_ln_res": (2, True, True),
}


class RecursiveLink(nn.Module):
    """in_rms: the RMS of what the link reads (an inner link: last-layer states; an outer one: the sender's
    embedding-sized thoughts); out_rms: the RMS of the input embeddings it stands in for (the receiving model's)."""

    def __init__(self, d_in, d_out, kind="inner", variant="2layer_ln_res", in_rms=1.0, out_rms=1.0):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown link variant '{variant}'; use one of {', '.join(VARIANTS)}")
        if kind == "inner" and d_in != d_out:
            raise ValueError(f"an inner link maps d -> d, got {d_in} -> {d_out}")
        self.kind, self.variant, self.d_in, self.d_out = kind, variant, d_in, d_out
        layers, self.residual, self.ln = VARIANTS[variant]
        two = layers == 2
        scale = out_rms if self.ln else out_rms / in_rms  # a LayerNorm's output has unit RMS already
        d_mid = 2 * d_out if (self.ln and kind == "outer") else d_out
        self.W1 = nn.Linear(d_in, d_mid if two else d_out)
        self.W2 = nn.Linear(d_mid, d_out) if two else None
        self.W3 = nn.Linear(d_in, d_out, bias=False) if (self.residual and kind == "outer") else None
        self.ln_in = nn.LayerNorm(d_in) if self.ln else None    # LN_pre (inner) / LN_src (outer)
        self.ln_out = nn.LayerNorm(d_out) if self.ln else None  # LN_post (inner) / LN_tgt (outer)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self._init_near_identity()

    @torch.no_grad()
    def _init_near_identity(self):
        last = self.W2 if self.W2 is not None else self.W1
        if self.residual:  # the learned branch starts at zero: the link starts as its residual path
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        elif self.W2 is None and self.d_in == self.d_out:  # 1layer: starts as the identity
            nn.init.eye_(self.W1.weight)
            nn.init.zeros_(self.W1.bias)
        if self.W3 is not None:
            if self.d_in == self.d_out:
                nn.init.eye_(self.W3.weight)
            else:  # a random map that keeps the per-element RMS: orthonormal rows (d_out < d_in) do already;
                # orthonormal columns (d_out > d_in) keep the norm, spread over more elements: sqrt(d_out / d_in)
                nn.init.orthogonal_(self.W3.weight, gain=max(1.0, self.d_out / self.d_in) ** 0.5)

    def forward(self, x):
        """x [..., d_in] -> [..., d_out]; computed in the link's dtype, returned in x's dtype."""
        dtype = x.dtype
        x = x.to(self.W1.weight.dtype)
        h = self.ln_in(x) if self.ln else x
        branch = self.W1(h) if self.W2 is None else self.W2(F.gelu(self.W1(h)))
        if self.residual:
            skip = self.W3(x) if self.W3 is not None else x  # outer: learned W3 x; inner: identity
            branch = skip + branch
        y = self.ln_out(branch) if self.ln else branch
        return (self.scale * y).to(dtype)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())


def make_links(roles, backbones, topology, variant="2layer_ln_res"):
    """A System's links: one inner link per agent (its last-layer states -> its own embeddings) and one outer link
    per edge and feedback edge 'src->dst' (src's thoughts -> dst's embeddings), each sized by the agents it joins
    (Backbone.embedding_scales) and placed on the device of the agent it feeds. Returns (inner, outer) ModuleDicts."""
    if variant not in VARIANTS:
        raise UserError(f"unknown link variant '{variant}'; use one of {', '.join(VARIANTS)}")
    scales = [bb.embedding_scales() for bb in backbones]  # (embedding rms, hidden rms) per agent
    inner = nn.ModuleDict({role: RecursiveLink(bb.hidden_size, bb.hidden_size, "inner", variant, in_rms=sc[1],
                                               out_rms=sc[0]).to(bb.device)
                           for role, bb, sc in zip(roles, backbones, scales)})
    outer = nn.ModuleDict({f"{roles[s]}->{roles[d]}": RecursiveLink(
        backbones[s].hidden_size, backbones[d].hidden_size, "outer", variant, in_rms=scales[s][0],
        out_rms=scales[d][0]).to(backbones[d].device) for s, d in topology.edges + topology.feedback})
    return inner, outer

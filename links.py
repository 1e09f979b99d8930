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

A checkpoint holds link weights only: one .safetensors file plus one .json saying what each link connects, the
tensor file's sha256 and the JSON's own sha256 (save_tensors / load_tensors, which train_single.py's adapters and full
weights use too).
"""
import hashlib
import json
import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

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


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: <path>.safetensors (the tensors) + <path>.json (what they are, the tensor file's sha256, and
# "json_sha256": the sha256 of the JSON's other entries, so an edited or corrupted JSON is refused as well).
# The tensor file is written first, the JSON last, each to a temp name and renamed: a reader that finds a JSON whose
# checksum does not match the tensor file is looking at a corrupt or half-written checkpoint and refuses it.
# A JSON written before json_sha256 existed (no such entry) still loads: its tensor file is still checked, and
# load_links checks every tensor's shape against the links it is loaded into.

class CheckpointError(ValueError):
    """A checkpoint that is missing a part, corrupt, half-written or not finite; the message names the file."""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_digest(info):
    """The sha256 of a checkpoint JSON's entries other than json_sha256 itself (keys sorted: the digest of the
    content, not of its layout)."""
    body = {k: v for k, v in info.items() if k != "json_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _replace_atomic(folder, path, write):
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_tensors(path, tensors, info):
    """Write {name: tensor} to <path>.safetensors and `info` plus the file's sha256 to <path>.json (written last).
    Refuses non-finite tensors (a checkpoint that can never be loaded)."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save '{path}': tensor {bad[0]} is not finite")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _replace_atomic(folder, path + ".safetensors", lambda f: save_file(tensors, f))
    info = dict(info, sha256=sha256_file(path + ".safetensors"))
    info["json_sha256"] = json_digest(info)
    _replace_atomic(folder, path + ".json", lambda f: open(f, "w").write(json.dumps(info, indent=1)))


def read_meta(path):
    """The JSON of a checkpoint saved by save_tensors; CheckpointError naming the file when it is missing or broken."""
    for suffix in (".safetensors", ".json"):
        if not os.path.exists(path + suffix):
            raise FileNotFoundError(f"no checkpoint at '{path}' (expected {path}.safetensors and {path}.json; "
                                    f"{path}{suffix} is missing)")
    try:
        with open(path + ".json") as f:
            info = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint '{path}.json' is not valid JSON ({e}); it is corrupt or half-written")
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
        raise CheckpointError(f"checkpoint '{path}.json' has no sha256 of its tensor file; it is incomplete "
                              f"(or written by an older version): save it again")
    if "json_sha256" in info and info["json_sha256"] != json_digest(info):
        raise CheckpointError(f"checkpoint '{path}.json' does not match its own json_sha256: it was edited or is "
                              f"corrupt; use another checkpoint or train again")
    return info


def load_tensors(path):
    """(tensors, info) of a checkpoint saved by save_tensors, verified: the tensor file's sha256 matches the JSON's,
    it parses, and every tensor is finite. Otherwise CheckpointError with one line naming the file."""
    from safetensors.torch import load_file
    info = read_meta(path)
    if sha256_file(path + ".safetensors") != info["sha256"]:
        raise CheckpointError(f"checkpoint '{path}.safetensors' does not match the sha256 in {path}.json: the file "
                              f"is corrupt or was not fully written; use another checkpoint or train again")
    try:
        tensors = load_file(path + ".safetensors")
    except Exception as e:  # a file that matches its checksum but does not parse: written by something else
        raise CheckpointError(f"checkpoint '{path}.safetensors' is not a readable safetensors file ({e})") from None
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint '{path}.safetensors' holds non-finite values (tensor {bad[0]}); refusing it")
    return tensors, info


def save_links(path, links, meta):
    """Write {name: link}'s weights and a JSON of what each link connects (save_tensors: checksummed, atomic)."""
    tensors = {f"{name}.{k}": v for name, link in links.items() for k, v in link.state_dict().items()}
    info = dict(meta, links={name: dict(kind=l.kind, variant=l.variant, d_in=l.d_in, d_out=l.d_out)
                             for name, l in links.items()})
    save_tensors(path, tensors, info)


def read_link_meta(path):
    """The JSON of a link checkpoint (FileNotFoundError / CheckpointError naming the file when it is broken)."""
    info = read_meta(path)
    if not isinstance(info.get("links"), dict):
        raise CheckpointError(f"checkpoint '{path}.json' has no 'links' entry: it is not a link checkpoint")
    return info


def load_links(path, links):
    """Load weights saved by save_links into {name: link}. Raises ValueError naming the problem when the checkpoint
    connects other agents or other hidden sizes than `links`, or is corrupt, half-written or not finite."""
    info = read_link_meta(path)
    saved = info["links"]
    if set(saved) != set(links):
        raise ValueError(f"checkpoint '{path}' holds links {sorted(saved)}, this system needs {sorted(links)}; "
                         f"it was trained for agents {info.get('agents')}")
    for name, link in links.items():
        s = saved[name]
        if (s["d_in"], s["d_out"]) != (link.d_in, link.d_out):
            raise ValueError(f"link '{name}' in checkpoint '{path}' maps hidden size {s['d_in']} -> {s['d_out']}, "
                             f"but these agents need {link.d_in} -> {link.d_out}; train links for these agents "
                             f"or pick the agents the checkpoint was trained for ({info.get('agents')})")
        if (s["kind"], s["variant"]) != (link.kind, link.variant):
            raise ValueError(f"link '{name}' in checkpoint '{path}' is {s['kind']}/{s['variant']}, "
                             f"expected {link.kind}/{link.variant}; pass --link-variant {s['variant']}")
    tensors, _ = load_tensors(path)
    for name, link in links.items():
        want = {f"{name}.{k}" for k in link.state_dict()}
        got = {k for k in tensors if k.startswith(name + ".")}
        if got != want:
            raise CheckpointError(f"checkpoint '{path}.safetensors' lacks or adds tensors for link '{name}' "
                                  f"({sorted(want ^ got)[:3]}); it does not fit its own JSON")
        own = link.state_dict()
        for k in sorted(want):
            if tensors[k].shape != own[k[len(name) + 1:]].shape:
                raise CheckpointError(f"checkpoint '{path}.safetensors': tensor {k} is {tuple(tensors[k].shape)}, "
                                      f"link '{name}' needs {tuple(own[k[len(name) + 1:]].shape)}; its tensors do "
                                      f"not fit what its JSON says (trained for other agents): use the checkpoint "
                                      f"made for these agents")
        link.load_state_dict({k[len(name) + 1:]: tensors[k] for k in want})
    return info


def check_link_file(path):
    """Check a link checkpoint without any model (argument parsing): both files there, the JSON's own checksum,
    the tensor file's sha256, and each link's tensor shapes against the hidden sizes its JSON names.
    CheckpointError / FileNotFoundError with one line naming the file otherwise; returns the JSON."""
    from safetensors import safe_open
    info = read_link_meta(path)
    if sha256_file(path + ".safetensors") != info["sha256"]:
        raise CheckpointError(f"checkpoint '{path}.safetensors' does not match the sha256 in {path}.json: the file "
                              f"is corrupt or was not fully written; use another checkpoint or train again")
    try:
        with safe_open(path + ".safetensors", "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"checkpoint '{path}.safetensors' is not a readable safetensors file ({e})") from None
    for name, s in info["links"].items():
        if not (isinstance(s, dict) and isinstance(s.get("d_in"), int) and isinstance(s.get("d_out"), int)):
            raise CheckpointError(f"checkpoint '{path}.json': link '{name}' has no hidden sizes d_in / d_out; "
                                  f"it is not a link checkpoint of this version")
        first, last = shapes.get(f"{name}.W1.weight"), shapes.get(f"{name}.W2.weight", shapes.get(f"{name}.W1.weight"))
        if first is None or len(first) != 2 or len(last) != 2 or (first[1], last[0]) != (s["d_in"], s["d_out"]):
            got = f"{first[1]} -> {last[0]}" if first and len(first) == 2 and len(last) == 2 else "no weights"
            raise CheckpointError(f"checkpoint '{path}': link '{name}' maps {s['d_in']} -> {s['d_out']} in its JSON "
                                  f"but {got} in its tensors; the JSON does not describe its tensors: use another "
                                  f"checkpoint or train again")
    return info

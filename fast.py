"""
The fast path: one-token steps over a static KV cache, replayed as a CUDA graph.

Why. A latent step (and a text-decode step) feeds ONE position through the whole frozen model. At batch 1 the GPU
work is tiny — read every weight once — but eager PyTorch launches ~40 small kernels per layer from Python, so the
step is bound by launch overhead, not by the GPU (an estimate, not a measurement: a Qwen2.5-1.5B-sized step reads
~2.6 GB of weights, under 1 ms at an H100's bandwidth, while its ~1,100 launches at several microseconds each take
several milliseconds; bench.py part 4 measures both on the machine at hand). The cure is standard: keep every
tensor the step touches at a fixed address (a preallocated KV cache, fixed input/output buffers, the position and
write index as device tensors), record the step's kernels once as a CUDA graph, and replay it: one launch per step.

What is reimplemented here, and what is not. The norms, projections and MLPs are the model's own modules, called as
HF calls them; only the attention over the cache is written out (it is where the static cache lives):

    x [B, 1, d] --> for each layer:  h = norm1(x); q, k, v = proj(h) [+ q/k norms]; rotary(q, k) at the row's position
                                     K[:, :, i] = k; V[:, :, i] = v      (i = the next free column, same for all rows)
                                     x += o_proj(attention(q, K, V, mask = columns filled so far))
                                     x += mlp(norm2(x))
                --> final norm --> [B, 1, d]     then i += 1, positions += 1, all on the device

Modes (--fast; a System keeps one per agent and passes choose(mode) as the `decoder` of Backbone.generate and
recursion.rollout): "off" = HF's forward with a DynamicCache (the reference); "static" = the step above run
eagerly (any device; what the CPU tests compare with "off"); "graph" = static + CUDA-graph replay; "compile" = static +
torch.compile (+ CUDA-graph replay on CUDA). "auto" = "graph" on CUDA for the supported families, else "off".
The prefill (a whole prompt at once) always runs through HF's forward; its KV cache is copied into the static one.
"""
import sys
import weakref

import torch
import torch.nn.functional as F

from model import EagerDecoder

# Decoder layers of the form  x += attn(norm1(x)); x += mlp(norm2(x))  with rotary, GQA and (Qwen3) q/k norms.
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
MODES = ("auto", "off", "static", "graph", "compile")


def unsupported(config):
    """Why this model cannot take the fast path (a string), or None when it can."""
    if config.model_type not in SUPPORTED:
        return f"model type '{config.model_type}' has no fast path (supported: {', '.join(SUPPORTED)})"
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or [])) or (
            config.model_type == "mistral" and getattr(config, "sliding_window", None)):
        return "sliding-window attention has no fast path"
    return None


def resolve_mode(mode, backbone):
    """--fast value -> the mode this backbone actually runs ("off" with a note on stderr when it cannot)."""
    cuda = backbone.device.type == "cuda"
    if mode == "auto":
        return "graph" if cuda and unsupported(backbone.config) is None else "off"
    if mode == "off":
        return mode
    why = unsupported(backbone.config) or ("CUDA graphs need a CUDA device" if mode == "graph" and not cuda else None)
    if why:
        print(f"note: --fast {mode} for {backbone.name}: {why}; using the eager path", file=sys.stderr)
        return "off"
    return mode


def bucket(n):
    """Cache length for n positions: a power of two >= 256, so few shapes (and few graphs) are ever built."""
    return max(256, 1 << (n - 1).bit_length())


class StaticDecoder:
    """One-token steps of a frozen backbone for a batch of B rows and at most L positions (prompt + new ones).

        dec = StaticDecoder(backbone, B, L, mode)
        hidden = dec.start(embeds, mask)      # prefill [B, T, d] (left-padded, mask [B, T]) -> [B, T, d]
        hidden = dec.step(e)                  # [B, 1, d] -> [B, 1, d]
    """

    def __init__(self, backbone, batch, max_len, mode="static"):
        cfg, lm = backbone.config, backbone.lm
        dev, dt = backbone.device, backbone.dtype
        if mode == "graph" and dev.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, and {backbone.name} is on {dev}; use mode 'static'")
        self.backbone, self.batch, self.max_len = backbone, batch, max_len
        self.layers, self.norm, self.rotary = lm.layers, lm.norm, lm.rotary_emb
        self.rope = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.head_dim = self.layers[0].self_attn.head_dim
        kv_heads = cfg.num_key_value_heads
        # every tensor the step reads or writes, at a fixed address
        self.k = [torch.zeros(batch, kv_heads, max_len, self.head_dim, device=dev, dtype=dt) for _ in self.layers]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.valid = torch.zeros(batch, max_len, dtype=torch.bool, device=dev)  # columns filled so far, per row
        self.pos = torch.zeros(batch, 1, dtype=torch.long, device=dev)          # position id of the next input
        self.idx = torch.zeros(1, dtype=torch.long, device=dev)                 # column the next input is written to
        self.x = torch.zeros(batch, 1, cfg.hidden_size, device=dev, dtype=dt)   # next input embedding
        self.out = torch.zeros_like(self.x)                                     # its last-layer state
        self.used = 0  # host-side count of filled columns (no device sync needed to check for overflow)
        fn = self._step
        if mode == "compile":
            fn = torch.compile(self._step, fullgraph=True, dynamic=False)
        self.graph = None
        if mode == "graph" or (mode == "compile" and dev.type == "cuda"):
            with torch.cuda.device(dev):  # capture on the backbone's own GPU (--spread puts agents on several)
                self.graph = self._capture(fn)
        elif mode == "compile":
            fn()  # compile now, so that a machine that cannot compile falls back when the decoder is built
        self.fn = fn

    @torch.no_grad()
    def _step(self):
        """The step: reads self.x, writes self.out, fills column self.idx of every layer's cache, advances."""
        x, B = self.x, self.batch
        cos, sin = self.rotary(x, self.pos)          # rotary angles of each row's next position, shared by all layers
        self.valid.index_fill_(1, self.idx, True)   # the new input attends to itself and everything before it
        mask = self.valid[:, None, None, :]          # [B, 1, 1, L]
        for layer, K, V in zip(self.layers, self.k, self.v):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h).view(B, 1, -1, self.head_dim)
            k = a.k_proj(h).view(B, 1, -1, self.head_dim)
            v = a.v_proj(h).view(B, 1, -1, self.head_dim)
            if hasattr(a, "q_norm"):  # Qwen3: RMSNorm on each head before the rotary embedding
                q, k = a.q_norm(q), a.k_norm(k)
            q, k = self.rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)  # [B, heads, 1, hd]
            K.index_copy_(2, self.idx, k)
            V.index_copy_(2, self.idx, v.transpose(1, 2))
            o = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, scale=a.scaling, enable_gqa=True)
            x = x + a.o_proj(o.transpose(1, 2).reshape(B, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        self.out.copy_(self.norm(x))
        self.idx.add_(1)
        self.pos.add_(1)

    def _capture(self, fn):
        """Record fn's kernels once as a CUDA graph (after warm-up runs on a side stream, as torch requires)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: lazy initialisation, cuBLAS handles, compilation and autotuning
                fn()
        torch.cuda.current_stream().wait_stream(side)
        self.idx.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph

    @torch.no_grad()
    def start(self, embeds, mask):
        """Prefill through HF's forward, then copy its KV cache into the static one. Returns the prompt's states."""
        B, T = mask.shape
        if B != self.batch or T >= self.max_len:
            raise ValueError(f"decoder built for batch {self.batch} and {self.max_len} positions, got {B} x {T}")
        hidden, cache = self.backbone.forward(embeds, mask)
        for i, (K, V) in enumerate(zip(self.k, self.v)):
            keys, values = layer_kv(cache, i)
            K.zero_()  # stale columns are masked, but must stay finite (0 x NaN is NaN)
            V.zero_()
            K[:, :, :T] = keys
            V[:, :, :T] = values
        self.valid.zero_()
        self.valid[:, :T] = mask.bool()
        self.pos.copy_((mask.long().sum(-1, keepdim=True)))  # a row's next position = its number of real tokens
        self.idx.fill_(T)
        self.used = T
        return hidden

    @torch.no_grad()
    def step(self, embeds):
        """embeds [B, 1, d] -> last-layer state [B, 1, d] (a copy: the buffer itself is overwritten by the next step)."""
        if self.used >= self.max_len:
            raise ValueError(f"static KV cache full ({self.max_len} positions); build the decoder with a larger max_len")
        self.x.copy_(embeds)
        self.graph.replay() if self.graph is not None else self.fn()
        self.used += 1
        return self.out.clone()


def layer_kv(cache, i):
    """(keys, values) [B, kv_heads, T, hd] of layer i from an HF cache, across transformers 5.x layouts."""
    if hasattr(cache, "layers"):
        return cache.layers[i].keys, cache.layers[i].values
    return cache.key_cache[i], cache.value_cache[i]


_DECODERS = weakref.WeakKeyDictionary()  # backbone -> {(batch, length, mode): StaticDecoder}, at most two shapes
_BROKEN = weakref.WeakSet()              # backbones whose decoder could not be built here: they stay eager


def decoders(backbone):
    """The StaticDecoders kept for this backbone (by shape)."""
    return _DECODERS.setdefault(backbone, {})


def decoder(backbone, batch, need, mode):
    """A StaticDecoder for this backbone, batch size and at least `need` positions, built once per shape (graphs are
    captured once, then replayed), or None when one cannot be built here (the caller goes eager). At most two shapes
    are kept per backbone, to bound the memory their caches hold."""
    if backbone in _BROKEN:
        return None
    store = decoders(backbone)
    key = (batch, bucket(need), mode)
    if key not in store:
        while len(store) >= 2:
            store.pop(next(iter(store)))
        try:
            store[key] = StaticDecoder(backbone, batch, key[1], mode)
        except Exception as e:  # e.g. a graph capture or a compilation this machine cannot do: stay correct, go eager
            print(f"note: fast path '{mode}' failed for {backbone.name} ({type(e).__name__}: "
                  f"{str(e).splitlines()[0][:200] if str(e) else ''}); using the eager path", file=sys.stderr)
            _BROKEN.add(backbone)
            return None
    return store[key]


def choose(mode):
    """The `decoder` argument of Backbone.generate and recursion.rollout for a resolved mode: make(backbone, batch,
    length) -> a StaticDecoder when the mode is not "off" and no gradient is being recorded (training rolls out
    eagerly), else (or when one cannot be built here) the eager reference."""
    def make(backbone, batch, length):
        if mode != "off" and not torch.is_grad_enabled():
            dec = decoder(backbone, batch, length, mode)
            if dec is not None:
                return dec
        return EagerDecoder(backbone, batch, length)
    return make

"""
Frozen backbones for RecursiveMAS.

A Backbone wraps one causal LM and its tokenizer. It never trains. It does four things:
  embed(ids)                       token ids -> input embeddings           [B, T] -> [B, T, d]
  forward(embeds, mask, cache)     input embeddings -> last-layer states   [B, T, d] -> [B, T, d] (+ KV cache)
  generate(embeds, mask, ...)      input embeddings -> text (greedy or temperature/top-p), with the KV cache
  prompt(messages) / encode(text)  chat template, with named slot markers where latents are spliced in

A Backbone holds no per-run settings: how one-token steps are computed (the eager reference here, or fast.py's static
cache) is chosen by the caller, per call (`decoder=`), so every System that shares a backbone keeps its own choice.
Loading (aliases, the hub, folders, .gguf files, synthetic models) is loading.py's.
"""
import inspect
import re

import torch
import torch.nn.functional as F

SLOT = re.compile(r"<\|slot:([A-Za-z0-9_\-]+)\|>")  # a named place in a prompt where latents are spliced in
SCALE_TEXT = "The quick brown fox jumps over the lazy dog. 12 + 7 = 19."  # a short real text: embedding_scales()


def slot(name):
    return f"<|slot:{name}|>"


class Backbone:
    def __init__(self, name, model, tokenizer):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        model.eval()
        model.requires_grad_(False)  # frozen: gradients may flow THROUGH it to the links, never INTO it
        # A vision-language checkpoint (gemma-3-4b-it, Qwen3.5) keeps its text model's sizes in a text config and
        # its decoder stack in .language_model; a plain causal LM has both at the top.
        self.config = model.config.get_text_config()
        self.lm = getattr(model.model, "language_model", model.model)  # the decoder stack: embeddings in, states out
        self.hidden_size = self.config.hidden_size
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = {tokenizer.eos_token_id} | set(_as_list(getattr(model.generation_config, "eos_token_id", None)))
        # transformers 5.x renames past_key_values -> cache; speak whichever this version knows
        params = inspect.signature(self.lm.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._scales = None  # embedding_scales(), measured once

    def num_params(self):
        return sum(p.numel() for p in self.model.parameters())

    # --- text ------------------------------------------------------------------------------------------------
    def prompt(self, messages):
        """Render chat messages with the model's template, ending with the assistant turn's header."""
        kw = {"enable_thinking": False}  # Qwen3 models run with thinking off (as in the paper); others ignore it
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)

    def encode(self, text):
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def split_slots(self, text):
        """'a <|slot:x|> b' -> [ids('a'), 'x', ids(' b')]: token-id lists and slot names, in order."""
        parts, pos = [], 0
        for m in SLOT.finditer(text):
            parts += [self.encode(text[pos:m.start()]), m.group(1)]
            pos = m.end()
        return parts + [self.encode(text[pos:])]

    # --- tensors ---------------------------------------------------------------------------------------------
    def embed(self, ids):
        return self.model.get_input_embeddings()(ids)  # [B, T] -> [B, T, d]

    def logits(self, hidden):
        return self.model.get_output_embeddings()(hidden)  # [B, T, d] -> [B, T, V]

    def forward(self, embeds, mask, cache=None):
        """Run the frozen LM on input embeddings.
        embeds [B, T, d]; mask [B, past + T] (1 = real token, 0 = left padding); cache from an earlier call or None.
        Returns (last-layer hidden states [B, T, d], cache). Position ids come from the mask, so a left-padded row
        sees the same positions as the same prompt alone."""
        position_ids = positions(mask, embeds.shape[1])
        if cache is None:
            from transformers import DynamicCache
            cache = DynamicCache(config=self.config)
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=True,
                      **{self._cache_kw: cache})
        return out.last_hidden_state, cache

    @torch.no_grad()
    def embedding_scales(self):
        """(per-element RMS of the input embeddings, of the last-layer states), measured once on a short real text
        (links.RecursiveLink maps between the two sizes). The embedding RMS is of embed(ids), what the model
        consumes, not of the raw embedding matrix: Gemma 3 multiplies by sqrt(d) inside its embedding module (the
        matrix alone is 50x too small at d=2560), and a real vocabulary holds rows a text never reaches (reserved
        tokens, padding rows up to a round size) whose sizes say nothing about the inputs a link stands in for."""
        if self._scales is None:
            ids = torch.tensor([self.encode(SCALE_TEXT)], device=self.device)
            embeds = self.embed(ids)  # [1, T, d]
            hidden, _ = self.forward(embeds, torch.ones_like(ids))  # [1, T, d]
            self._scales = (embeds.float().pow(2).mean().sqrt().item(), hidden.float().pow(2).mean().sqrt().item())
        return self._scales

    def forward_checkpointed(self, embeds, mask):
        """forward() without a KV cache and with gradient checkpointing: activations are recomputed in the backward
        pass instead of kept (for the long teacher-forced answer pass in training). Same result as forward()."""
        position_ids = positions(mask, embeds.shape[1])
        new = hasattr(self.model, "activation_checkpointing_enable")  # the name in newer transformers 5.x
        if new:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lm.train()  # HF checkpoints only in training mode; these models have no dropout on this path
        try:
            out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
        finally:
            self.lm.eval()
            self.model.activation_checkpointing_disable() if new else self.model.gradient_checkpointing_disable()
        return out.last_hidden_state

    @torch.no_grad()
    def generate(self, embeds, mask, max_new_tokens=256, temperature=0.0, top_p=1.0, generator=None, stop=(),
                 with_end=False, decoder=None):
        """Decode text after input embeddings [B, T, d] (left-padded, mask [B, T]); greedy when temperature == 0.
        A row also ends when its text ends with one of the `stop` strings (kept in the text). decoder(backbone, batch,
        length) makes the one-token stepper (default: EagerDecoder; fast.choose(mode) for the fast path).
        Returns (texts, tokens) with tokens[b] = number of tokens generated for row b (its end token included);
        with_end=True adds ended[b]: False when row b was cut at max_new_tokens (no end token, no stop string)."""
        B = embeds.shape[0]
        dec = (decoder or EagerDecoder)(self, B, mask.shape[1] + max_new_tokens)
        hidden = dec.start(embeds, mask)
        out = torch.full((B, max_new_tokens), self.tokenizer.pad_token_id, dtype=torch.long, device=embeds.device)
        done = torch.zeros(B, dtype=torch.bool, device=embeds.device)
        counts = torch.zeros(B, dtype=torch.long, device=embeds.device)
        eos = torch.tensor(sorted(self.eos_ids), device=embeds.device)
        for t in range(max_new_tokens):
            nxt = sample(self.logits(hidden[:, -1]).float(), temperature, top_p, generator)  # [B]
            nxt = torch.where(done, self.tokenizer.pad_token_id, nxt)
            out[:, t] = nxt
            counts += (~done).long()
            done |= torch.isin(nxt, eos)
            for b in range(B) if stop else ():
                if not done[b] and self.tokenizer.decode(out[b, :counts[b]]).rstrip().endswith(tuple(stop)):
                    done[b] = True
            if done.all() or t == max_new_tokens - 1:
                break
            hidden = dec.step(self.embed(nxt[:, None]))
        texts = [self.tokenizer.decode(row[:n], skip_special_tokens=True).strip() for row, n in zip(out, counts)]
        return (texts, counts.tolist(), done.tolist()) if with_end else (texts, counts.tolist())


class EagerDecoder:
    """One-token steps through HF's forward and a DynamicCache: the reference that fast.StaticDecoder must equal.

        dec = EagerDecoder(backbone, B, L)    # B rows, at most L positions (unused here: the cache grows)
        hidden = dec.start(embeds, mask)      # prefill [B, T, d] (left-padded, mask [B, T]) -> [B, T, d]
        hidden = dec.step(e)                  # one more position for every row: [B, 1, d] -> [B, 1, d]
    """

    def __init__(self, backbone, batch=None, length=None):
        self.backbone = backbone

    def start(self, embeds, mask):
        self.mask = mask
        hidden, self.cache = self.backbone.forward(embeds, mask)
        return hidden

    def step(self, embeds):
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        hidden, self.cache = self.backbone.forward(embeds, self.mask, self.cache)
        return hidden


def pad_left(rows, d, device):
    """[T_b, d] rows -> embeds [B, T, d] (zeros on the left), mask [B, T]."""
    T = max(len(r) for r in rows)
    embeds = rows[0].new_zeros(len(rows), T, d)
    mask = torch.zeros(len(rows), T, dtype=torch.long, device=device)
    for b, r in enumerate(rows):
        embeds[b, T - len(r):] = r
        mask[b, T - len(r):] = 1
    return embeds, mask


def positions(mask, T):
    """Position ids of the last T inputs from the attention mask [B, past + T]: each row counts its own real tokens
    from 0, so left padding does not shift them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]


def sample(logits, temperature=0.0, top_p=1.0, generator=None):
    """logits [B, V] -> token ids [B]: argmax, or temperature + nucleus (top-p) sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = F.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _as_list(x):
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]

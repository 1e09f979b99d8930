"""
The paper's trained baselines as objects: the final agent with a LoRA adapter (PEFT) on every linear layer of every
decoder layer, or with all its weights trained (full SFT). train_single.py trains them; evaluate.py --method lora /
full loads them (trained_backbone).

A checkpoint is NAME.safetensors + NAME.json (checkpoints.save_tensors): LoRA keeps only the adapter's tensors and
names the base model, its hidden size, r, alpha, dropout and target modules; full keeps the model's weights and names
the base model. trained_backbone() turns either into a Backbone for evaluation (the adapter merged into a copy).
"""
import copy
import os

import torch

from checkpoints import CheckpointError, load_tensors, read_meta, save_tensors
from errors import UserError
from model import Backbone

METHODS = ("lora", "full")
FILE = {"lora": "adapter", "full": "weights"}  # the checkpoint's name in a run folder
DEFAULT_LR = {"lora": 5e-4, "full": 5e-5}  # lora: train_outer.py's; full: lower, every weight moves
# The paper's LoRA baseline trains 15.92M parameters, 0.37% of Qwen3.5-4B (paper Table 5, §5). An adapter on every
# linear layer of every decoder layer ("all") at rank 8 is 16.23M there, 0.358% of the 4.54B loaded model
# (tests/test_single.py counts it on QWEN3_5_4B's shape); q_proj,v_proj alone would reach 8 of Qwen3.5's 32 layers.
LORA_R = 8
LORA_ALPHA = 16.0  # alpha / r = 2: the adapter's update is scaled by 2, a common LoRA choice
LORA_DROPOUT = 0.05
LORA_TARGETS = "all"  # every linear layer inside every decoder layer; not the embeddings, the LM head or a vision tower
# Qwen/Qwen3.5-4B's config.json (huggingface.co/Qwen/Qwen3.5-4B/blob/main/config.json), the sizes that set the
# parameter count: text model (hybrid, a full-attention layer every fourth) and vision tower; both embeddings tied.
QWEN3_5_4B = dict(
    text_config=dict(hidden_size=2560, intermediate_size=9216, num_hidden_layers=32, num_attention_heads=16,
                     num_key_value_heads=4, head_dim=256, vocab_size=248320,  # q_proj carries its output gate
                     layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 8, linear_conv_kernel_dim=4,
                     linear_num_key_heads=16, linear_key_head_dim=128, linear_num_value_heads=32,
                     linear_value_head_dim=128, tie_word_embeddings=True),
    vision_config=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2560,
                       num_position_embeddings=2304, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                       in_channels=3),
    tie_word_embeddings=True)


def decoder_linears(model, targets=(LORA_TARGETS,)):
    """Names (in `model`) of the nn.Linear modules inside its decoder layers that `targets` picks: ["all"], or
    module names matched at the end of the path (q_proj, mlp.down_proj). The decoder layers are the text model's
    (model.model.language_model in a vision-language checkpoint), so a vision tower's q_proj is never picked."""
    lm = getattr(model.model, "language_model", model.model)
    prefix = next(n for n, m in model.named_modules() if m is lm.layers)  # e.g. model.language_model.layers
    names = [f"{prefix}.{i}.{n}" for i, layer in enumerate(lm.layers)
             for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    if list(targets) == ["all"]:
        return names
    return [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]


def add_lora(model, r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, targets=(LORA_TARGETS,), name="the model"):
    """Wrap `model` in place with LoRA adapters (PEFT) on decoder_linears(model, targets); returns the PeftModel.
    Works on the meta device too (the tests count Qwen3.5-4B's adapter that way, without its weights)."""
    try:
        import peft
    except ImportError:
        raise UserError("--method lora needs peft: pip install peft") from None
    modules = decoder_linears(model, targets)
    if not modules:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in decoder_linears(model)})
        raise UserError(f"--lora-targets {','.join(targets)} match no linear layer in {name}'s decoder layers "
                        f"(it has {', '.join(leaves)}; or 'all')")
    return peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                      target_modules=modules))


class Tuned:
    """A private copy of a backbone's model with what `method` trains switched on: LoRA adapters on the linear
    layers of every decoder layer (lora) or every weight (full). .backbone runs the copy; the given backbone (cached
    and shared by every agent naming that model) is never touched. save()/load() are what trainer.train checkpoints."""

    def __init__(self, backbone, method, r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, targets=(LORA_TARGETS,)):
        if method not in METHODS:
            raise UserError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
        self.method, self.base, self.name = method, backbone, FILE[method]
        self.label = "LoRA adapter" if method == "lora" else "model"
        self.lora = dict(r=r, alpha=alpha, dropout=dropout, targets=list(targets)) if method == "lora" else None
        model = copy.deepcopy(backbone.model)
        if method == "lora":
            self.peft = add_lora(model, r, alpha, dropout, targets, backbone.name)
            model = self.peft.base_model.model  # the same CausalLM, with LoRA layers injected in place
        trained = [n for n, p in model.named_parameters() if p.requires_grad or method == "full"]
        self.backbone = Backbone(backbone.name, model, backbone.tokenizer)  # its constructor freezes everything...
        named = dict(model.named_parameters())  # tied weights appear once
        self.params = {n: named[n] for n in trained}
        for p in self.params.values():  # ...then what this method trains thaws
            p.requires_grad_(True)

    def meta(self):
        return dict(method=self.method, base_model=self.base.name, hidden_size=self.base.hidden_size,
                    **({"lora": self.lora} if self.lora else {}))

    def save(self, path, extra=None):
        save_tensors(path, self.params, dict(self.meta(), **(extra or {})))

    def load(self, path):
        """Tensors saved by save() for this base model, method and LoRA shape; a one-line UserError otherwise."""
        try:
            tensors, info = load_tensors(path)
        except (FileNotFoundError, CheckpointError) as e:
            raise UserError(str(e)) from None
        check_meta(info, self.meta(), path)
        if set(tensors) != set(self.params):
            odd = sorted(set(tensors) ^ set(self.params))
            raise UserError(f"'{path}.safetensors' does not fit {self.base.name} ({len(odd)} tensors differ, e.g. "
                            f"{odd[0]}); it was saved for another model")
        with torch.no_grad():
            for n, p in self.params.items():
                if tensors[n].shape != p.shape:
                    raise UserError(f"'{path}.safetensors': {n} is {tuple(tensors[n].shape)}, this model needs "
                                    f"{tuple(p.shape)}; it was saved for another model")
                p.copy_(tensors[n])

    def merged(self):
        """A new frozen Backbone for inference: the adapter merged into the copied weights, or the full weights."""
        model = self.peft.merge_and_unload() if self.method == "lora" else self.backbone.model
        return Backbone(self.base.name, model, self.base.tokenizer)


def check_meta(info, want, path):
    """The JSON of a checkpoint against the model and method it is loaded for; one line naming the difference."""
    if info.get("method") != want["method"]:
        raise UserError(f"'{path}' is a {info.get('method')} checkpoint, not {want['method']}; "
                        f"pass the matching method")
    for key in ("base_model", "hidden_size", "lora"):
        if info.get(key) != want.get(key):
            raise UserError(f"'{path}' was trained for {key} {info.get(key)}, not {want.get(key)}; "
                            f"pick the matching agent or checkpoint")


def trained_backbone(backbone, method, path):
    """A NEW Backbone: `backbone`'s model with the LoRA adapter at `path` merged (method 'lora') or the full weights
    at `path` loaded ('full'); `path` is NAME (without .safetensors/.json) or a run folder. `backbone` is untouched.
    UserError with one line on a mismatch (another model or method) or a missing / corrupt file."""
    if method not in METHODS:
        raise UserError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
    if os.path.isdir(path):
        path = os.path.join(path, FILE[method])
    try:
        info = read_meta(path)
    except (FileNotFoundError, CheckpointError) as e:
        raise UserError(str(e)) from None
    lora = info.get("lora") if method == "lora" else None
    check_meta(info, dict(method=method, base_model=backbone.name, hidden_size=backbone.hidden_size, lora=lora), path)
    if method == "lora" and not (isinstance(lora, dict) and {"r", "alpha", "dropout", "targets"} <= set(lora)):
        raise UserError(f"'{path}.json' lacks the LoRA settings (r, alpha, dropout, targets); it is incomplete")
    tuned = Tuned(backbone, method, **({k: lora[k] for k in ("r", "alpha", "dropout", "targets")} if lora else {}))
    tuned.load(path)
    return tuned.merged()

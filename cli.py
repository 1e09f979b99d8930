"""
The command line every script shares: option types, the shared option blocks, the parser, and main().

Bad input stops at parsing, before any model loads, with ONE line on stderr that names the option and the fix, and
exit code 2; every type below refuses what it cannot use (a float that is not finite, a file that is not there, a
folder that cannot be written). A shared option is defined once, here, with one default; None means "the protocol's"
(protocol.py) or "the script's", as its help says.

    p = cli.Parser(description=..., epilog="example: ...")
    cli.add_answering_args(p)                               # what the system is, how long it thinks, how it writes
    p.add_argument("--mine", type=cli.positive_int, ...)    # the script's own options
    def work(args): ...                                     # raises UserError for a mistake the user can fix
    sys.exit(cli.main(p, work))
"""
import argparse
import math
import os
import sys
import tempfile

from checkpoints import CheckpointError, check_link_file
from errors import UserError
from fast import MODES as FAST_MODES
from links import VARIANTS
from loading import SYNTHETIC, resolve
from patterns import PRESETS, TOPOLOGIES, expand_agents
from protocol import PAPER_CODE_TEMPERATURE, PAPER_LATENT_STEPS, PAPER_ROUNDS, PAPER_TEMPERATURE, PAPER_TOP_P, QUICK
from tools import read_docs

DEFAULT_AGENTS = "smollm,smollm"  # the small real model that installs offline (loading.py), twice


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every default in --help, but None (the option's help says what None means: the protocol's, the script's)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, with the defaults in --help, bad input reported as ONE line on stderr (no usage block) and exit
    code 2, and --resume / --overwrite refused together."""

    def __init__(self, **kw):
        super().__init__(formatter_class=_Help, **kw)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        a = super().parse_args(args, namespace)
        if getattr(a, "resume", False) and getattr(a, "overwrite", False):
            self.error("--resume and --overwrite contradict each other: pick one")
        return a


def main(parser, work, argv=None):
    """Parse argv, then work(args) -> exit code (None: 0), guarded."""
    return guarded(work, parser.parse_args(argv))


def guarded(work, *args):
    """work(*args) -> exit code (None: 0). A UserError (rows.DataError is one) is a mistake the user can fix: its
    one line goes to stderr and the exit code is 2, never a traceback."""
    try:
        return work(*args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ---- option types: convert, check, or say in one line what is wanted -------------------------------------------

def checked(kind, ok, what):
    """An argparse type: convert with `kind`, accept when ok(value), else a one-line error saying what is wanted.
    A float that is not finite (nan, inf) is never accepted, whatever ok() says."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    parse.__name__ = what  # argparse names the type in its message
    return parse


positive_int = checked(int, lambda v: v > 0, "a whole number >= 1")
count = checked(int, lambda v: v >= 0, "a whole number >= 0")
new_tokens = checked(int, lambda v: 0 < v <= 65536, "a number of new tokens in 1..65536")
seconds = checked(float, lambda v: 0 < v < 86400, "a number of seconds > 0")
temperature = checked(float, lambda v: 0 <= v <= 100, "a temperature >= 0 (0 = greedy)")
top_p = checked(float, lambda v: 0 < v <= 1, "a top-p in (0, 1]")
positive_float = checked(float, lambda v: v > 0, "a finite number > 0")
learning_rate = checked(float, lambda v: 0 < v < 1, "a learning rate in (0, 1)")
device = checked(str, lambda v: v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()),
                 "a device (auto, cpu, cuda, cuda:N or mps)")


def list_of(kind, choices=None, what="value"):
    """An argparse type for a comma-separated list: each item converted by `kind` (or one of `choices`); a list
    with no item, or an unknown one, is a one-line error naming it."""
    def parse(text):
        items = [x.strip() for x in text.split(",") if x.strip()]
        if choices is not None:
            unknown = [x for x in items if x not in choices]
            if unknown or not items:
                raise argparse.ArgumentTypeError(f"unknown {what} '{(unknown or [text])[0]}'; use a comma-separated "
                                                 f"list of {', '.join(choices)}")
            return list(dict.fromkeys(items))
        if not items:
            raise argparse.ArgumentTypeError(f"'{text}' is empty; pass a comma-separated list")
        return [kind(x) for x in items]
    parse.__name__ = f"list of {what}"
    return parse


def text(s):
    """Free text: it must be valid UTF-8 (a shell can hand over other bytes)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("is not valid UTF-8 text") from None
    return s


def agent_names(s):
    """--agents: valid UTF-8, and every name resolvable (an alias, a hub id, a model folder, a .gguf file, a preset)
    before anything loads (loading.resolve: a folder without config.json, a file that is not GGUF, ...)."""
    text(s)
    try:
        for name in expand_agents(s, "sequential")[0]:
            resolve(name)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


SIZES = [n.removeprefix("random-") for n in SYNTHETIC if n.startswith("random-")]  # qwen2.5-1.5b, llama-3.2-1b, ...


def random_sizes(text):
    """bench.py --sizes 'qwen2.5-1.5b,llama-3.2-1b' -> 'random-qwen2.5-1.5b,random-llama-3.2-1b': random-initialised
    models in the shapes of the paper's backbones (loading.SYNTHETIC)."""
    names = [x.strip().removeprefix("random-") for x in text.split(",")]
    if unknown := [x for x in names if x not in SIZES]:
        raise argparse.ArgumentTypeError(f"unknown --sizes entry '{unknown[0]}'; use one of {', '.join(SIZES)}")
    return ",".join("random-" + x for x in names)


def search_docs(path):
    """--search-docs: a JSONL file of {title, text} passages, read and checked at parsing (tools.read_docs)."""
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"file '{path}' not found")
    try:
        read_docs(path)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path


def link_checkpoint(path):
    """--links: a link checkpoint (path without .safetensors/.json), checked at parsing without any model: both
    files, their checksums, and its tensors against its JSON (checkpoints.check_link_file)."""
    try:
        check_link_file(path)
    except (FileNotFoundError, CheckpointError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path


def out_folder(path):
    """--out: a folder that is there or can be made, and written to; checked at parsing, before any work, so a run
    never measures or trains for minutes and then fails to save. Nothing is left behind (a probe file comes and
    goes)."""
    if not path or not path.strip():
        raise argparse.ArgumentTypeError("is empty; pass a folder, e.g. --out runs/mine")
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"'{path}' is a file; --out needs a folder: pass another --out")
    there = os.path.abspath(path)
    while not os.path.exists(there):  # the nearest part of the path that exists: the folder would be made in it
        there = os.path.dirname(there)
    if not os.path.isdir(there):
        raise argparse.ArgumentTypeError(f"'{path}' cannot be made: '{there}' is a file, not a folder; "
                                         f"pass another --out")
    try:  # access() says yes to root even where nothing can be written (/proc, a read-only mount): try it
        fd, probe = tempfile.mkstemp(dir=there, prefix=".tmp-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"'{path}' is not writable ('{there}': {e.strerror}); pass a folder you "
                                         f"can write to") from None
    return path


# ---- the shared option blocks ------------------------------------------------------------------------------------

def add_system_args(p):
    """What the System is (recursion.system_from_args builds it): every script that runs agents."""
    p.add_argument("--agents", default=DEFAULT_AGENTS, type=agent_names,
                   help=f"comma-separated aliases, hub ids, folders or .gguf files; or a preset: {', '.join(PRESETS)}")
    p.add_argument("--pattern", default="sequential", choices=list(TOPOLOGIES), help="who feeds whom")
    p.add_argument("--link-variant", default="2layer_ln_res", choices=list(VARIANTS), help="RecursiveLink form")
    p.add_argument("--links", default=None, type=link_checkpoint,
                   help="link checkpoint (path without .safetensors/.json); default untrained")
    p.add_argument("--search-docs", default=None, type=search_docs,
                   help="JSONL of {title, text} passages for the deliberation pattern's <search> tool")
    p.add_argument("--tool-timeout", type=seconds, default=10.0, help="seconds per <python> tool call")
    p.add_argument("--device", default="auto", type=device, help="auto: cuda when torch sees one, else cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on CUDA, float32 elsewhere")
    p.add_argument("--spread", action="store_true", help="with several GPUs: each distinct backbone on its own GPU")
    p.add_argument("--trust-remote-code", action="store_true", help="run model code from the hub (off: safer)")
    p.add_argument("--fast", default="auto", choices=FAST_MODES,
                   help="one-token steps: auto = static KV cache + CUDA graph on CUDA for supported models, "
                        "the eager HF forward elsewhere; off | static | graph | compile to choose")
    p.add_argument("--seed", type=int, default=0, help="random seed: sampling, training batches (evaluate.py: the "
                                                       "first of --seeds)")


def add_answering_args(p):
    """Everything a script that asks the system questions shares: what it is, how long it thinks, how it writes."""
    add_system_args(p)
    add_loop_args(p)
    add_decoding_args(p)


def add_loop_args(p):
    """How long the system thinks; None: the protocol's (protocol.py)."""
    p.add_argument("--rounds", type=positive_int, default=None,
                   help=f"rounds of the loop (the paper: 1-3); default: the protocol's (quick {QUICK['rounds']}, "
                        f"paper {PAPER_ROUNDS})")
    p.add_argument("--latent-steps", type=count, default=None,
                   help=f"latent thoughts per agent and round (the paper: 16-80); default: the protocol's (quick "
                        f"{QUICK['latent_steps']}, paper {PAPER_LATENT_STEPS})")


def add_decoding_args(p):
    """How the answer is written; None: the protocol's (protocol.py)."""
    p.add_argument("--max-new-tokens", type=new_tokens, default=None,
                   help=f"most tokens an agent writes; default: the protocol's (quick {QUICK['max_new_tokens']}, "
                        f"paper: per benchmark)")
    p.add_argument("--temperature", type=temperature, default=None,
                   help=f"0 = greedy; default: the protocol's (quick greedy, paper {PAPER_TEMPERATURE}, code "
                        f"{PAPER_CODE_TEMPERATURE})")
    p.add_argument("--top-p", type=top_p, default=None,
                   help=f"nucleus sampling; default: the protocol's (quick {QUICK['top_p']}, paper {PAPER_TOP_P})")


def add_out_args(p, resumable=True):
    """Where results go (default None: the script's folder under runs/), and whether an old run continues."""
    p.add_argument("--out", default=None, type=out_folder, help="output folder; default: runs/<what the script does>")
    if resumable:
        p.add_argument("--resume", action="store_true", help="continue the run in --out, skipping what is done")
        p.add_argument("--overwrite", action="store_true", help="replace the run in --out and start afresh")


def add_training_args(p, steps, lr, batch):
    """A training run's options (trainer.train), after the system's and the run folder's."""
    add_system_args(p)
    add_out_args(p)
    p.add_argument("--data", default="gsm8k", type=text,
                   help="'gsm8k' (rows derived from GSM8K train, offline), 'arith2' (generated two-step arithmetic, "
                        "tasks.py), 'secret' (train_outer.py: the latent-channel task) or a .jsonl/.json file of "
                        "rows (rows.py)")
    p.add_argument("--steps", type=positive_int, default=steps, help="optimizer steps")
    p.add_argument("--batch-size", type=positive_int, default=batch, help="rows per step (per rank)")
    p.add_argument("--lr", type=learning_rate, default=lr, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=count, default=10, help="linear warm-up steps before the cosine decay")
    p.add_argument("--max-target-tokens", type=positive_int, default=None,
                   help="cut target texts to this many tokens (default: 160 on a CPU, 2048 on a GPU); a cut target "
                        "has no end token, so the model is never taught to stop where the cut falls")
    p.add_argument("--ckpt-every", type=positive_int, default=20, help="checkpoint every N steps")
    p.add_argument("--log-every", type=positive_int, default=5, help="a progress line every N steps")

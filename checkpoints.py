"""
Checkpoints: every file a run writes to keep what it trained, written atomically and read back verified.

A checkpoint is <path>.safetensors (the tensors) + <path>.json (what they are, the tensor file's sha256, and
"json_sha256": the sha256 of the JSON's other entries, so an edited or corrupted JSON is refused as well). The tensor
file is written first, the JSON last, each to a temporary name and renamed (files.write_atomic): a reader that finds a
JSON whose checksum does not match the tensor file is looking at a corrupt or half-written checkpoint and refuses it.
A JSON without json_sha256 still loads: its tensor file is still checked, and load_links checks every tensor's shape
against the links it is loaded into.

  save_tensors / load_tensors / read_meta     any named tensors (links, a LoRA adapter, a model's full weights)
  save_links / load_links / check_link_file   a System's RecursiveLinks, checked against the agents they connect
  prepare_out / save_checkpoint / load_checkpoint / checkpoint_folder / checkpoint_run
                                              a training run folder (trainer.py), resumable:
    OUT/NAME.safetensors, OUT/NAME.json   the newest weights (NAME: links, adapter or weights)
    OUT/step-000040/                      NAME.* + state.pt (optimizer, schedule, losses) + run.json (step, args)
    OUT/latest                            the name of the newest step folder
  NAME.json holds the sha256 of NAME.safetensors, of state.pt and of run.json, and its own; --resume checks them all
  before any model loads and refuses a mismatch. A non-empty OUT needs --resume or --overwrite; stale .tmp- entries
  are removed at start; a resume that would change what is trained (--agents, --train-inner, --method, ...) is
  refused.
"""
import hashlib
import json
import os
import shutil
import tempfile

import torch

from errors import UserError, first_line
from files import sha256_file, write_atomic


class CheckpointError(ValueError):
    """A checkpoint that is missing a part, corrupt, half-written or not finite; the message names the file."""


def json_digest(info):
    """The sha256 of a checkpoint JSON's entries other than json_sha256 itself (keys sorted: the digest of the
    content, not of its layout)."""
    body = {k: v for k, v in info.items() if k != "json_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def save_tensors(path, tensors, info):
    """Write {name: tensor} to <path>.safetensors and `info` plus the file's sha256 to <path>.json (written last).
    Refuses non-finite tensors (a checkpoint that can never be loaded)."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save '{path}': tensor {bad[0]} is not finite")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path + ".safetensors", lambda f: save_file(tensors, f))
    info = dict(info, sha256=sha256_file(path + ".safetensors"))
    info["json_sha256"] = json_digest(info)
    write_atomic(path + ".json", json.dumps(info, indent=1))


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


def check_tensor_file(path, info):
    """The tensor file's sha256 against the one its JSON holds; CheckpointError naming the file when they differ."""
    if sha256_file(path + ".safetensors") != info["sha256"]:
        raise CheckpointError(f"checkpoint '{path}.safetensors' does not match the sha256 in {path}.json: the file "
                              f"is corrupt or was not fully written; use another checkpoint or train again")


def load_tensors(path):
    """(tensors, info) of a checkpoint saved by save_tensors, verified: the tensor file's sha256 matches the JSON's,
    it parses, and every tensor is finite. Otherwise CheckpointError with one line naming the file."""
    from safetensors.torch import load_file
    info = read_meta(path)
    check_tensor_file(path, info)
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


def links_of(system):
    """{name: link} of an recursion.System: 'inner.<role>' and 'outer.<src>-><dst>'."""
    return {**{f"inner.{k}": v for k, v in system.inner.items()}, **{f"outer.{k}": v for k, v in system.outer.items()}}


def system_meta(system):
    """What a System's link checkpoint records about the agents its links connect."""
    return dict(pattern=system.pattern, agents=system.agent_names, roles=system.roles, variant=system.variant,
                models=[bb.name for bb in system.backbones], hidden_sizes=[bb.hidden_size for bb in system.backbones])


def save_system_links(system, path, extra=None):
    save_links(path, links_of(system), dict(system_meta(system), **(extra or {})))


def load_system_links(system, path):
    """Load a link checkpoint into a System; a UserError naming the difference when it was trained for another
    pattern, other agents or other sizes, or is missing, corrupt or half-written."""
    try:
        info = read_link_meta(path)
        if info.get("pattern", system.pattern) != system.pattern:
            raise ValueError(f"checkpoint '{path}' is for the {info['pattern']} pattern, not {system.pattern}")
        load_links(path, links_of(system))  # checks link names and hidden sizes, naming both
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if info.get("models") != [bb.name for bb in system.backbones]:
        raise UserError(f"checkpoint '{path}' was trained for agents {info.get('agents')} ({info.get('models')}), "
                        f"not {system.agent_names}; pass --agents {','.join(info['agents'])}")
    return info


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
    check_tensor_file(path, info)
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


# ----------------------------------------------------------------------------------------------------------------
# The run folder of a training run

# Settings that decide WHAT is trained: a --resume must not change them (the rest may change, with a note).
TRAINED_BY = ("stage", "agents", "pattern", "link_variant", "train_inner", "method", "lora_r", "lora_alpha",
              "lora_dropout", "lora_targets")
RUN_FILES = ("links", "adapter", "weights")  # what a run folder may hold besides step-*/, latest and .tmp-*


def _simple_args(args):
    return {k: v for k, v in vars(args).items()
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}


CHECKED_FILES = ("state.pt", "run.json")  # a step folder's files besides NAME.*, whose sha256 NAME.json holds


def checkpoint_folder(out):
    """The step folder OUT/latest names, every file in it checked against its checksum (NAME.json's own, the tensor
    file's, state.pt's and run.json's); None when OUT has no 'latest'. UserError with one line otherwise.
    A step folder written before state.pt and run.json had checksums (no "files" in NAME.json) is accepted with
    what it has: its tensor file and JSON are still checked."""
    latest = os.path.join(out, "latest")
    if not os.path.exists(latest):
        return None
    try:
        with open(latest, encoding="utf-8") as f:
            name = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--resume: cannot read '{latest}' ({e}); start again with --overwrite") from None
    folder = os.path.join(out, name)
    if not name.startswith("step-") or "/" in name or not os.path.isdir(folder):
        raise UserError(f"--resume: '{latest}' names '{name}', which is not a step folder in '{out}'; "
                        f"the run is incomplete: start again with --overwrite")
    weights = [n for n in RUN_FILES if os.path.exists(os.path.join(folder, n + ".json"))]
    if not weights:
        raise UserError(f"--resume: '{folder}' holds no {'/'.join(RUN_FILES)}.json; the checkpoint is incomplete: "
                        f"start again with --overwrite")
    path = os.path.join(folder, weights[0])
    try:
        info = read_meta(path)
        check_tensor_file(path, info)
    except (FileNotFoundError, CheckpointError) as e:
        raise UserError(f"--resume: {e}; start again with --overwrite") from None
    files = info.get("files")
    for f in CHECKED_FILES if files is not None else ():
        p = os.path.join(folder, f)
        if not os.path.isfile(p):
            raise UserError(f"--resume: '{p}' is missing; the checkpoint is incomplete: start again with --overwrite")
        if not isinstance(files, dict) or sha256_file(p) != files.get(f):
            raise UserError(f"--resume: '{p}' does not match the sha256 in {path}.json: it is corrupt or was "
                            f"changed; start again with --overwrite")
    return folder


def checkpoint_run(out):
    """The run.json ({step, args}) of the checkpoint OUT/latest names (checked: checkpoint_folder), or None."""
    folder = checkpoint_folder(out)
    if folder is None:
        return None
    run = os.path.join(folder, "run.json")
    try:
        with open(run, encoding="utf-8") as f:
            saved = json.load(f)
        if not isinstance(saved["args"], dict) or not isinstance(saved["step"], int):
            raise ValueError("no args or step")
        return saved
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--resume: cannot read '{run}' ({e}); the checkpoint is incomplete: start again with "
                        f"--overwrite") from None


def _remove(path):
    """Rename to a .tmp- name first, so a kill half-way through leaves only something prepare_out cleans up."""
    gone = os.path.join(os.path.dirname(path), f".tmp-gone-{os.getpid()}-{os.path.basename(path)}")
    os.replace(path, gone)
    _delete(gone)


def _delete(path):
    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def prepare_out(args):
    """Check and prepare the run folder args.out before any work: stale .tmp-* entries removed; a non-empty folder
    needs --resume (whose checkpoint must train the same thing) or --overwrite (which deletes the old run's files,
    and only those); the folder must be writable. The scripts call it right after parsing, before any model loads,
    so a mistake costs nothing."""
    out, resume, overwrite = args.out, args.resume, args.overwrite
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes, cleans or deletes
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: pick one")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out '{out}' is a file, not a folder; pass another --out")
    if os.path.isdir(out):
        for name in os.listdir(out) if first else []:
            if name.startswith(".tmp-"):  # left by a run that was killed while writing
                _delete(os.path.join(out, name))
        ours = lambda n: (n.startswith("step-") or n == "latest"
                          or any(n in (f + ".safetensors", f + ".json") for f in RUN_FILES))
        entries = [n for n in os.listdir(out) if not n.startswith(".tmp-")]
        if overwrite and first:
            others = [n for n in entries if not ours(n)]
            if others:
                raise UserError(f"--overwrite: '{out}' holds files that are not a training run's "
                                f"({', '.join(sorted(others)[:3])}); pick another --out")
            for n in entries:
                _remove(os.path.join(out, n))
        elif entries and not resume:
            raise UserError(f"--out '{out}' already holds a run; continue it with --resume, replace it with "
                            f"--overwrite, or pick another --out")
    if resume:
        run = checkpoint_run(out)
        if run is None:
            raise UserError(f"--resume: no checkpoint in '{out}' (no '{os.path.join(out, 'latest')}'); "
                            f"start without --resume")
        saved = run["args"]
        if getattr(args, "steps", None) is not None and args.steps < run["step"]:
            raise UserError(f"--resume: the run in '{out}' has done {run['step']} steps already, more than --steps "
                            f"{args.steps}; pass --steps {run['step']} or more (the total, not the steps to add)")
        now = _simple_args(args)
        changed = [k for k in TRAINED_BY if saved.get(k) != now.get(k) and (k in saved or k in now)]
        if changed:
            k = changed[0]
            raise UserError(f"--resume would change what is trained: --{k.replace('_', '-')} was {saved.get(k)!r} "
                            f"in '{out}', now {now.get(k)!r}; resume with the same setting, or start with --overwrite")
        quiet = set(TRAINED_BY) | {"resume", "overwrite", "out", "log_every", "ckpt_every"}
        notes = [f"--{k.replace('_', '-')} {saved.get(k)} -> {now.get(k)}" for k in sorted(set(saved) | set(now))
                 if k not in quiet and saved.get(k) != now.get(k) and now.get(k) is not None]  # None: resolved later
        if notes and first:
            print(f"note: resuming with changed settings: {', '.join(notes)}", flush=True)
    try:
        os.makedirs(out, exist_ok=True)
        if not first:
            return
        fd, probe = tempfile.mkstemp(dir=out, prefix=".tmp-probe-")
        os.write(fd, b"ok")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--out '{out}' is not writable ({e.strerror}); pass a folder you can write to") from None


def save_checkpoint(out, weights, opt, sched, step, losses, args):
    """OUT/step-N/ is written in a temp folder and renamed (atomic), then OUT/latest points at it, then OUT/NAME.*
    (hard links to the step's files where the file system allows, else copies) are refreshed, the tensor file
    first and its JSON (holding the tensor file's checksum) last; then older step folders are pruned."""
    name, extra = f"step-{step:06d}", dict(step=step, stage=args.stage, args=_simple_args(args))
    tmp = tempfile.mkdtemp(dir=out, prefix=".tmp-")
    torch.save(dict(optimizer=opt.state_dict(), scheduler=sched.state_dict(), step=step, losses=losses),
               os.path.join(tmp, "state.pt"))
    with open(os.path.join(tmp, "run.json"), "w") as f:
        json.dump(dict(step=step, args=_simple_args(args)), f, indent=1)
    # the weights' JSON last: it holds the checksums of state.pt and run.json (and its own), so it vouches for all
    extra["files"] = {f: sha256_file(os.path.join(tmp, f)) for f in CHECKED_FILES}
    weights.save(os.path.join(tmp, weights.name), extra)
    if os.path.exists(os.path.join(out, name)):
        _remove(os.path.join(out, name))
    os.replace(tmp, os.path.join(out, name))
    write_atomic(os.path.join(out, "latest"), name)
    for suffix in (".safetensors", ".json"):  # the JSON last: its checksum vouches for the tensor file
        src, tmp = os.path.join(out, name, weights.name + suffix), os.path.join(out, f".tmp-{os.getpid()}{suffix}")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, os.path.join(out, weights.name + suffix))
    steps = sorted(d for d in os.listdir(out) if d.startswith("step-"))
    for old in [d for d in steps if d != name and d not in steps[:steps.index(name)][-1:]]:  # keep this and the last
        _remove(os.path.join(out, old))


def load_checkpoint(out, weights, opt, sched):
    folder = checkpoint_folder(out)  # every file checked against its checksum
    if folder is None:
        raise UserError(f"--resume: no checkpoint in '{out}' (no '{os.path.join(out, 'latest')}'); "
                        f"start without --resume")
    weights.load(os.path.join(folder, weights.name))  # refuses corrupt weights / other agents with a clear message
    path = os.path.join(folder, "state.pt")
    try:  # a step folder from before state.pt had a checksum can still be cut short
        state = torch.load(path, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        return state["step"], state["losses"]
    except Exception as e:
        raise UserError(f"--resume: cannot load '{path}' ({first_line(e)}); it is corrupt or from another run: start "
                        f"again with --overwrite") from None

"""
The looped multi-agent system: RecursiveMAS (agents pass latents) and, on the same loop, Recursive-TextMAS (agents
pass text) and the single-agent baseline.

One round = every agent once, in order. An agent reads the question plus whatever reaches its slots, then either
  - rolls out m latent thoughts (latent mode): h_t = last-layer state, e_t = inner(h_t) is fed back as the next input
    embedding, with the KV cache; the m thoughts [B, m, d] go through one outer link per out-going edge, or
  - writes text (text mode), which the next agent reads in the same slot,
and in the last round the final agent decodes the answer. A pattern is just WHO FEEDS WHOM (see TOPOLOGIES).

    python agents.py --agents smollm,smollm --mode latent --rounds 2 --latent-steps 8 --question "What is 12*7?"
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

import torch
import torch.nn as nn

from fast import MODES as FAST_MODES, add_argument as add_fast_argument, resolve_mode as resolve_fast
from links import RecursiveLink, VARIANTS, check_link_file, load_links, read_link_meta, save_links
from errors import UserError
from model import check_available, load_backbone, pad_left, pick_device, pick_dtype, resolve, slot
from patterns import PRESETS, TOPOLOGIES, base_role, expand_agents, role_of, slot_label, slot_name
from tools import Search, answer_with_tools, read_docs

# Paper B.3: a final answer cut at its token budget gets this line appended, and the model writes a short ending
# after it (System.answer), so a long solution still states an answer instead of scoring as "no answer".
FINAL_ANSWER = "\nFinal Answer:"

# ----------------------------------------------------------------------------------------------------------------
# Latent rollout (docs/method.md §3): KV-cached, and the recompute-everything reference it must equal

def rollout(backbone, inner, embeds, mask, latent_steps):
    """embeds [B, T, d], mask [B, T] (left-padded) -> latent thoughts [B, m, d], m = latent_steps: e_t = inner(h_t),
    where h_1 is the prompt's last state and h_{t+1} the state after feeding e_t. One prefill, then one one-token
    step per thought, with the KV cache (backbone.decoder: the eager reference or fast.py's static one)."""
    dec = backbone.decoder(embeds.shape[0], mask.shape[1] + latent_steps)
    hidden = dec.start(embeds, mask)
    thoughts = []
    for t in range(latent_steps):
        e = inner(hidden[:, -1:])  # [B, 1, d]
        thoughts.append(e)
        if t < latent_steps - 1:
            hidden = dec.step(e)
    return torch.cat(thoughts, dim=1) if thoughts else embeds[:, :0]  # [B, m, d]


def rollout_recompute(backbone, inner, embeds, mask, latent_steps):
    """The released code's way: re-run the whole sequence at every step (O(m) full forwards). Reference and bench."""
    thoughts = []
    for t in range(latent_steps):
        hidden, _ = backbone.forward(embeds, mask)
        e = inner(hidden[:, -1:])
        thoughts.append(e)
        embeds = torch.cat([embeds, e], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.cat(thoughts, dim=1) if thoughts else embeds[:, :0]


def build_inputs(backbone, prompts, latents):
    """Rendered prompts (one per row) with slot markers + {slot: [B, m, d]} -> left-padded embeds [B, T, d], mask [B, T]."""
    rows = []
    for b, text in enumerate(prompts):
        pieces = []
        for part in backbone.split_slots(text):
            if isinstance(part, str):
                if part not in latents:
                    raise KeyError(f"prompt has slot '{part}' but no latents were sent to it")
                pieces.append(latents[part][b])  # [m, d]
            elif part:
                pieces.append(backbone.embed(torch.tensor(part, device=backbone.device)))
        rows.append(torch.cat(pieces).to(backbone.dtype))
    return pad_left(rows, backbone.hidden_size, backbone.device)


# ----------------------------------------------------------------------------------------------------------------
# The system

class System(nn.Module):
    """Agents (frozen backbones, shared when they name the same model) + their RecursiveLinks (trainable)."""

    def __init__(self, agents, pattern="sequential", variant="2layer_ln_res", device="cpu", dtype=torch.float32,
                 trust_remote_code=False, spread=False, search_docs=None, tool_timeout=10.0, fast="auto"):
        super().__init__()
        if pattern not in TOPOLOGIES:
            raise UserError(f"unknown pattern '{pattern}'; use one of {', '.join(TOPOLOGIES)}")
        if variant not in VARIANTS:
            raise UserError(f"unknown link variant '{variant}'; use one of {', '.join(VARIANTS)}")
        self.agent_names, self.pattern, self.variant = list(agents), pattern, variant
        try:
            self.search = Search(search_docs) if search_docs else None  # the tool-caller's local document collection
        except ValueError as e:
            raise UserError(f"--search-docs: {e}") from None
        self.tool_timeout = tool_timeout
        self.topology = TOPOLOGIES[pattern](len(agents))
        self.roles = self.topology.roles
        devices = [device] * len(agents)
        if spread and str(device).startswith("cuda") and torch.cuda.device_count() > 1:  # one GPU per distinct model
            names = list(dict.fromkeys(agents))
            devices = [f"cuda:{names.index(a) % torch.cuda.device_count()}" for a in agents]
        check_available(agents)  # every missing model named at once, before minutes of loading
        self.backbones = [load_backbone(a, dev, dtype, trust_remote_code) for a, dev in zip(agents, devices)]
        if fast not in FAST_MODES:
            raise UserError(f"unknown --fast '{fast}'; use one of {', '.join(FAST_MODES)}")
        for bb in self.backbones:  # fast.py: static KV cache + CUDA graph for one-token steps ("auto": on CUDA)
            bb.fast = resolve_fast(fast, bb)
        stats = [embedding_stats(bb) for bb in self.backbones]  # (embedding rms, hidden rms)
        self.inner = nn.ModuleDict({  # last-layer states -> own embeddings
            role: RecursiveLink(bb.hidden_size, bb.hidden_size, "inner", variant, in_rms=st[1], out_rms=st[0])
            for role, bb, st in zip(self.roles, self.backbones, stats)})
        self.outer = nn.ModuleDict()
        for s, d in self.topology.edges + self.topology.feedback:
            src, dst = self.backbones[s], self.backbones[d]
            self.outer[f"{self.roles[s]}->{self.roles[d]}"] = RecursiveLink(
                src.hidden_size, dst.hidden_size, "outer", variant, in_rms=stats[s][0], out_rms=stats[d][0])
        for role, bb in zip(self.roles, self.backbones):  # each link lives on the device of the agent it feeds
            self.inner[role].to(bb.device)
        for s, d in self.topology.edges + self.topology.feedback:
            self.outer[f"{self.roles[s]}->{self.roles[d]}"].to(self.backbones[d].device)

    # --- what each agent reads ------------------------------------------------------------------------------------
    def incoming(self, i, round_):
        """Edges into agent i in this round: [(src, is_feedback)]."""
        t = self.topology
        return [(s, False) for s, d in t.edges if d == i] + [(s, True) for s, d in t.feedback if d == i and round_ > 0]

    def prompt(self, i, question, round_, texts=None, alone=False):
        """Rendered prompt of agent i: the role's instructions, the question, and a slot marker where each incoming
        message goes (text mode: the text itself; alone: none, the single-agent baseline).
        A question may be {"first": text for agent 1, "last": text for the others} (the latent-channel task)."""
        if isinstance(question, dict):
            question = question["first"] if i == 0 else question["last"]
        role = role_of(self.roles[i])
        inbox = [] if alone else [
            f"{slot_label(self.roles[s])}:\n" + (texts[name] if texts is not None else slot(name))
            for s, fb in self.incoming(i, round_) for name in [slot_name(self.roles[s], fb)]]
        asked = [f"Question:\n{question}"]
        intro = [] if alone else [role.intro]  # alone, the final agent is asked the question and nothing else
        user = "\n\n".join(intro + (inbox + asked if role.slots_first else asked + inbox) + [role.closing])
        return self.backbones[i].prompt([{"role": "system", "content": role.system}, {"role": "user", "content": user}])

    def link_params(self):
        return sum(p.numel() for p in self.parameters())

    # --- the loop -------------------------------------------------------------------------------------------------
    def latent_pass(self, questions, rounds, latent_steps, make_latents=None):
        """Run `rounds` rounds in latent mode; returns the final agent's inputs per round: [(embeds, mask)] * rounds.
        make_latents(i, embeds, mask, round_) -> [B, m, d] overrides the rollout (train_outer.py's teacher mode)."""
        last, inbox, finals = len(self.roles) - 1, [{} for _ in self.roles], []
        self.latent_steps_done = 0
        for r in range(rounds):
            for i, (role, bb) in enumerate(zip(self.roles, self.backbones)):
                prompts = [self.prompt(i, q, r) for q in questions]
                embeds, mask = build_inputs(bb, prompts, inbox[i])
                if i == last:
                    finals.append((embeds, mask))
                    if r == rounds - 1:
                        break
                if make_latents is not None:
                    thoughts = make_latents(i, embeds, mask, r)
                else:
                    thoughts = rollout(bb, self.inner[role], embeds, mask, latent_steps)  # [B, m, d_i]
                self.latent_steps_done += thoughts.shape[1]  # counted where they are made, not from a formula
                self.send(i, thoughts, inbox, last_round=r == rounds - 1)
        return finals

    def send(self, i, payload, inbox, last_round):
        """Deliver agent i's thoughts (a tensor: through each edge's outer link) or text (a list: as is)."""
        t = self.topology
        for (s, d), fb in [(e, False) for e in t.edges] + ([] if last_round else [(e, True) for e in t.feedback]):
            if s == i:
                msg = payload
                if torch.is_tensor(payload):
                    msg = self.outer[f"{self.roles[s]}->{self.roles[d]}"](payload.to(self.backbones[d].device))
                inbox[d][slot_name(self.roles[s], fb)] = msg  # [B, m, d_dst] or list[str]

    @torch.no_grad()
    def run(self, questions, mode="latent", rounds=1, latent_steps=8, max_new_tokens=256, temperature=0.0, top_p=1.0,
            final_answer=0):
        """Answer a batch of questions. Returns one record per question:
        {text, tokens: {role: generated tokens}, latent_steps, seconds (the whole batch's wall time), written (every
        text any agent generated, in order), continued (the final answer was cut and got the FINAL_ANSWER ending)}.
        final_answer: new tokens of that ending (0: none); see answer()."""
        if not questions or any(not q or (isinstance(q, str) and not q.strip()) for q in questions):
            raise UserError("empty question; pass a non-empty --question")
        if mode not in ("latent", "text", "single"):
            raise UserError(f"unknown mode '{mode}'; use latent, text or single")
        B, last, t0 = len(questions), len(self.roles) - 1, _now()
        tokens, written = [{} for _ in questions], [[] for _ in questions]  # written: every text any agent wrote
        gen = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        if mode == "single":  # the final agent alone, no links, no slots
            bb = self.backbones[last]
            prompts = [self.prompt(last, q, 0, alone=True) for q in questions]
            texts, counts, calls, continued = self.answer(last, *build_inputs(bb, prompts, {}), gen, final_answer)
            latent = 0
        elif mode == "latent":
            embeds, mask = self.latent_pass(questions, rounds, latent_steps)[-1]
            texts, counts, calls, continued = self.answer(last, embeds, mask, gen, final_answer)
            latent = self.latent_steps_done
        else:  # Recursive-TextMAS: the same loop, every agent writes text and the next one reads it
            inbox = [{} for _ in self.roles]
            for r in range(rounds):
                for i, (role, bb) in enumerate(zip(self.roles, self.backbones)):
                    prompts = [self.prompt(i, q, r, texts={k: v[b] for k, v in inbox[i].items()})
                               for b, q in enumerate(questions)]
                    if i == last and r == rounds - 1:
                        texts, counts, calls, continued = self.answer(i, *build_inputs(bb, prompts, {}), gen,
                                                                      final_answer)
                    else:
                        texts, counts = bb.generate(*build_inputs(bb, prompts, {}), **gen)
                    for b in range(B):
                        tokens[b][role] = tokens[b].get(role, 0) + counts[b]
                        written[b].append(texts[b])
                    if i == last and r == rounds - 1:
                        break
                    self.send(i, texts, inbox, last_round=r == rounds - 1)
            latent = 0
        if mode != "text":
            for b in range(B):
                tokens[b][self.roles[last]] = counts[b]
                written[b].append(texts[b])
        seconds = _now() - t0
        return [dict(text=texts[b], tokens=tokens[b], latent_steps=latent, seconds=seconds, written=written[b],
                     continued=continued[b], **({"tool_calls": calls[b]} if calls else {})) for b in range(B)]

    def answer(self, i, embeds, mask, gen, final_answer=0):
        """Agent i writes the answer; a tool-caller calls its tools on the way (tools.answer_with_tools).
        final_answer > 0 (paper B.3): a row cut at its token budget (no end token) gets FINAL_ANSWER appended and
        writes at most `final_answer` more tokens after [prompt | cut text | FINAL_ANSWER]; its text is then
        cut text + FINAL_ANSWER + " " + that ending, and its tokens count both generations. (Not for the
        tool-caller, whose loop decodes in several pieces.)
        Returns (texts, tokens, tool calls per row or None, continued per row)."""
        bb = self.backbones[i]
        if base_role(self.roles[i]) == "toolcaller":
            return (*answer_with_tools(bb, embeds, mask, gen, self.search, self.tool_timeout), [False] * len(embeds))
        texts, counts, ended = bb.generate(embeds, mask, with_end=True, **gen)
        cut = [b for b, e in enumerate(ended) if not e] if final_answer else []
        if cut:
            rows = [torch.cat([embeds[b, mask[b].bool()],  # the prompt as this row read it, unpadded
                               bb.embed(torch.tensor(bb.encode(texts[b] + FINAL_ANSWER), device=bb.device))])
                    for b in cut]
            ending, more = bb.generate(*pad_left(rows, bb.hidden_size, bb.device),
                                       **dict(gen, max_new_tokens=final_answer))
            texts, counts = list(texts), list(counts)
            for b, t, k in zip(cut, ending, more):
                texts[b], counts[b] = f"{texts[b]}{FINAL_ANSWER} {t}", counts[b] + k
        return texts, counts, None, [b in cut for b in range(len(texts))]

    # --- checkpoints ------------------------------------------------------------------------------------------------
    def named_links(self):
        return {**{f"inner.{k}": v for k, v in self.inner.items()}, **{f"outer.{k}": v for k, v in self.outer.items()}}

    def meta(self):
        return dict(pattern=self.pattern, agents=self.agent_names, roles=self.roles, variant=self.variant,
                    models=[bb.name for bb in self.backbones], hidden_sizes=[bb.hidden_size for bb in self.backbones])

    def save_links(self, path, extra=None):
        save_links(path, self.named_links(), dict(self.meta(), **(extra or {})))

    def load_links(self, path):
        """Load a link checkpoint; a clear UserError when it was trained for other agents or sizes."""
        try:
            info = read_link_meta(path)
            if info.get("pattern", self.pattern) != self.pattern:
                raise ValueError(f"checkpoint '{path}' is for the {info['pattern']} pattern, not {self.pattern}")
            load_links(path, self.named_links())  # checks link names and hidden sizes, naming both
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        if info.get("models") != [bb.name for bb in self.backbones]:
            raise UserError(f"checkpoint '{path}' was trained for agents {info.get('agents')} "
                            f"({info.get('models')}), not {self.agent_names}; pass --agents {','.join(info['agents'])}")
        return info


@torch.no_grad()
def embedding_stats(bb):
    """(per-element RMS of the input embeddings, of the last-layer states), both measured on a short real text and
    cached per backbone. The embedding RMS is of bb.embed(ids), what the model actually consumes, not of the raw
    embedding matrix: Gemma 3 multiplies by sqrt(d) inside its embedding module (the matrix alone is 50x too small
    at d=2560), and a real vocabulary holds rows a text never reaches (reserved tokens, padding rows up to a round
    size) whose sizes say nothing about the inputs a link stands in for; the ids of real text do."""
    if not hasattr(bb, "_stats"):
        ids = torch.tensor([bb.encode("The quick brown fox jumps over the lazy dog. 12 + 7 = 19.")], device=bb.device)
        embeds = bb.embed(ids)  # [1, T, d]
        hidden, _ = bb.forward(embeds, torch.ones_like(ids))  # [1, T, d]
        bb._stats = (embeds.float().pow(2).mean().sqrt().item(), hidden.float().pow(2).mean().sqrt().item())
    return bb._stats


def _now():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


# ----------------------------------------------------------------------------------------------------------------
# CLI

class Parser(argparse.ArgumentParser):
    """argparse, with bad input reported as ONE line on stderr (no usage block) and exit code 2."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


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
device = checked(str, lambda v: v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()),
                  "a device (auto, cpu, cuda, cuda:N or mps)")


def text(s):
    """An argparse type for free text: it must be valid UTF-8 (a shell can hand over other bytes)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("is not valid UTF-8 text") from None
    return s


def agent_names(s):
    """--agents: valid UTF-8, and every name resolvable (an alias, a hub id, a model folder, a .gguf file, a preset)
    before anything loads (model.resolve: a folder without config.json, a file that is not GGUF, ...)."""
    text(s)
    try:
        for name in expand_agents(s, "sequential")[0]:
            resolve(name)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


def existing_file(path):
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"file '{path}' not found")
    return path


def search_docs(path):
    """--search-docs: a JSONL file of {title, text} passages, read and checked at parsing (tools.read_docs)."""
    existing_file(path)
    try:
        read_docs(path)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path


def link_checkpoint(path):
    """--links: a link checkpoint (path without .safetensors/.json), checked at parsing without any model: both
    files, their checksums, and its tensors against its JSON (links.check_link_file)."""
    try:
        check_link_file(path)
    except (FileNotFoundError, ValueError) as e:
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


def add_system_args(p, agents="smollm,smollm"):
    """The options that describe a System, shared by every script (agents, evaluate, training, bench)."""
    p.add_argument("--agents", default=agents, type=agent_names,
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
    add_fast_argument(p)


def add_loop_args(p, rounds=2, latent_steps=8):
    """How long the system thinks: rounds and latent steps per agent and round."""
    note = "" if rounds is not None else "; default: the protocol's"
    p.add_argument("--rounds", type=positive_int, default=rounds, help=f"rounds of the loop (the paper: 1-3){note}")
    p.add_argument("--latent-steps", type=count, default=latent_steps,
                   help=f"latent thoughts per agent and round (the paper: 16-80){note}")


def system_from_args(a):
    """The System that add_system_args' options describe."""
    dev = pick_device(a.device)
    names, pattern = expand_agents(a.agents, a.pattern)
    system = System(names, pattern, a.link_variant, dev, pick_dtype(a.dtype, dev), a.trust_remote_code, a.spread,
                    a.search_docs, a.tool_timeout, a.fast)
    if a.links:
        system.load_links(a.links)
    return system


def main(argv=None):
    p = Parser(description="Ask the looped multi-agent system one question.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter,
               epilog='example: python agents.py --agents smollm,smollm --mode latent --rounds 2 '
                      '--latent-steps 8 --question "What is 12*7?"')
    add_system_args(p)
    add_loop_args(p)
    p.add_argument("--mode", default="latent", choices=["latent", "text", "single"],
                   help="latent: RecursiveMAS; text: Recursive-TextMAS; single: the final agent alone")
    p.add_argument("--question", default="What is 12*7?", type=text, help="the question to answer")
    p.add_argument("--max-new-tokens", type=new_tokens, default=256, help="most tokens the final agent writes")
    p.add_argument("--temperature", type=temperature, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=top_p, default=1.0, help="nucleus sampling (with a temperature > 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    try:
        if not a.question.strip():
            raise UserError("empty question; pass a non-empty --question")
        torch.manual_seed(a.seed)
        system = system_from_args(a)
        rec = system.run([a.question], a.mode, a.rounds, a.latent_steps, a.max_new_tokens, a.temperature, a.top_p)[0]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rec = dict(rec, mode=a.mode, agents=system.agent_names, rounds=a.rounds,
               total_tokens=sum(rec["tokens"].values()))
    if a.json:
        print(json.dumps(rec))
    else:
        print(rec["text"])
        for c in rec.get("tool_calls", []):
            print(f"--- tool {c['tool']}: {c['input'][:60]!r} -> {c['result'][:60]!r}")
        print(f"--- {a.mode}: {rec['total_tokens']} generated tokens {rec['tokens']}, {rec['latent_steps']} latent steps, "
              f"{rec['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

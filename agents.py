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
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from fast import MODES as FAST_MODES, add_argument as add_fast_argument, resolve_mode as resolve_fast
from links import RecursiveLink, VARIANTS, load_links, read_link_meta, save_links
from model import UserError, load_backbone, pick_device, pick_dtype, slot
from tools import MAX_CALLS, STOP, TOOL_CALL, Search, run_tool

# ----------------------------------------------------------------------------------------------------------------
# Roles and patterns

ROLES = {  # role -> (system prompt, which training field is its target text)
    "planner": ("You are the planner. Work out a short step-by-step plan that solves the question. "
                "Do not give the final answer.", "plan"),
    "critic": ("You are the critic. Check the plan for mistakes and write an improved plan.", "refined_plan"),
    "solver": ("You are the solver. Solve the question step by step and put the final answer in \\boxed{}.",
               "answer"),
    "math": ("You are a mathematics specialist. Think about the question from a mathematical angle.", "plan"),
    "code": ("You are a programming specialist. Think about how code would solve the question.", "plan"),
    "science": ("You are a science and medicine specialist. Think about the facts the question needs.", "plan"),
    "summarizer": ("You combine the specialists' thoughts into one answer. Put the final answer in \\boxed{}.",
                   "answer"),
    "expert": ("You are the expert. Think the question through carefully.", "plan"),
    "learner": ("You are the learner. Use the expert's thoughts to solve the question; put the final answer in "
                "\\boxed{}.", "answer"),
    "reflector": ("You are the reflector. Think about what needs to be computed or looked up.", "plan"),
    "toolcaller": ("You solve the question and may call tools. To run Python, write <python>code that prints the "
                   "result</python>; to search documents, write <search>query</search>. The result comes back as "
                   "<result>...</result>. Put the final answer in \\boxed{}.\n"
                   "Example. Question: What is 2**20?\n<python>print(2**20)</python>\n<result>1048576</result>\n"
                   "The answer is \\boxed{1048576}.", "answer"),
}


@dataclass
class Topology:
    roles: list     # agent i plays roles[i]; the LAST agent writes the answer
    edges: list     # (src, dst) within a round, src < dst: src's latents go to dst in the same round
    feedback: list  # (src, dst) across rounds: src's latents reach dst in the next round (not after the last)


def _unique(roles):
    return [r if roles.count(r) == 1 else f"{r}{i}" for i, r in enumerate(roles)]


# The four patterns of the paper, side by side: only who feeds whom differs.
def sequential(n):
    """planner -> [critic ->] solver, solver -> planner as feedback. n=1: one agent looping on its own thoughts."""
    roles = {1: ["solver"], 2: ["planner", "solver"]}.get(n) or ["planner"] + ["critic"] * (n - 2) + ["solver"]
    return Topology(_unique(roles), [(i, i + 1) for i in range(n - 1)], [(n - 1, 0)])


def mixture(n):
    """specialists think in parallel -> summarizer reads every stream (one slot each); feedback to each specialist."""
    if n < 2:
        raise UserError("the mixture pattern needs at least 2 agents: specialists then a summarizer")
    roles = _unique([("math", "code", "science")[i % 3] for i in range(n - 1)]) + ["summarizer"]
    return Topology(roles, [(i, n - 1) for i in range(n - 1)], [(n - 1, i) for i in range(n - 1)])


def distillation(n):
    """a (larger) expert thinks -> a (smaller) learner answers; feedback learner -> expert."""
    if n != 2:
        raise UserError("the distillation pattern takes exactly 2 agents: expert,learner")
    return Topology(["expert", "learner"], [(0, 1)], [(1, 0)])


def deliberation(n):
    """a reflector thinks -> a tool-caller answers, calling <python>/<search> tools; feedback tool-caller -> reflector."""
    if n != 2:
        raise UserError("the deliberation pattern takes exactly 2 agents: reflector,toolcaller")
    return Topology(["reflector", "toolcaller"], [(0, 1)], [(1, 0)])


def debate(n):
    """two planners think side by side -> a solver reads both (one slot each); feedback solver -> each planner."""
    if n != 3:
        raise UserError("the debate pattern takes exactly 3 agents: planner,planner,solver")
    return Topology(_unique(["planner", "planner", "solver"]), [(0, 2), (1, 2)], [(2, 0), (2, 1)])


TOPOLOGIES = {"sequential": sequential, "mixture": mixture, "distillation": distillation, "deliberation": deliberation,
              "debate": debate}

PRESETS = {  # the paper's lineups (DESIGN.md §7): --agents paper-light etc.
    "paper-light": ("sequential", "qwen,llama,qwen-math"),
    "paper-scaled": ("sequential", "gemma,llama-3b,qwen3.5-4b"),
    "paper-mixture": ("mixture", "deepseek,qwen-coder,mistral,qwen3.5-2b"),
    "paper-distillation": ("distillation", "qwen3.5-9b,qwen3.5-4b"),
    "paper-deliberation": ("deliberation", "qwen3.5-4b,qwen3.5-4b"),
}


def expand_agents(agents, pattern):
    """'paper-mixture' -> (['deepseek', ...], 'mixture'); 'a,b' -> (['a', 'b'], pattern)."""
    if agents in PRESETS:
        return PRESETS[agents][1].split(","), PRESETS[agents][0]
    names = [a.strip() for a in agents.split(",") if a.strip()]
    if not names:
        raise UserError("--agents is empty; pass e.g. --agents smollm,smollm")
    return names, pattern


def _base(role):
    return role.rstrip("0123456789")


def role_prompt(role):
    return ROLES.get(_base(role), ROLES["solver"])[0]


def role_target(role):
    """The training field an agent of this role learns to produce (plan, refined_plan or answer)."""
    return ROLES.get(_base(role), ROLES["solver"])[1]


def slot_name(src_role, feedback):
    return ("feedback_" if feedback else "from_") + src_role


# ----------------------------------------------------------------------------------------------------------------
# Latent rollout (DESIGN.md §3): KV-cached, and the recompute-everything reference it must equal

def rollout(backbone, inner, embeds, mask, steps):
    """embeds [B, T, d], mask [B, T] (left-padded) -> latent thoughts [B, steps, d]: e_t = inner(h_t), where h_1 is the
    prompt's last state and h_{t+1} is the state after feeding e_t. One prefill, then one one-token step each
    (through fast.py's static cache / CUDA graph when the backbone's fast path is on)."""
    dec = backbone.stepper(embeds.shape[0], mask.shape[1] + steps)
    hidden, cache = (dec.start(embeds, mask), None) if dec else backbone.forward(embeds, mask)
    thoughts = []
    for t in range(steps):
        e = inner(hidden[:, -1:])  # [B, 1, d]
        thoughts.append(e)
        if t < steps - 1 and dec:
            hidden = dec.step(e)
        elif t < steps - 1:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            hidden, cache = backbone.forward(e, mask, cache)
    return torch.cat(thoughts, dim=1) if thoughts else embeds[:, :0]  # [B, m, d]


def rollout_recompute(backbone, inner, embeds, mask, steps):
    """The released code's way: re-run the whole sequence at every step (O(m) full forwards). Reference and bench."""
    thoughts = []
    for t in range(steps):
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


def pad_left(rows, d, device):
    """[T_b, d] rows -> embeds [B, T, d] (zeros on the left), mask [B, T]."""
    T = max(len(r) for r in rows)
    embeds = rows[0].new_zeros(len(rows), T, d)
    mask = torch.zeros(len(rows), T, dtype=torch.long, device=device)
    for b, r in enumerate(rows):
        embeds[b, T - len(r):] = r
        mask[b, T - len(r):] = 1
    return embeds, mask


def append_targets(backbone, embeds, mask, texts, max_tokens, pad_to=None):
    """Teacher forcing: [prompt inputs | target text tokens + end token], right-padded.
    Returns embeds [B, T+L, d], mask [B, T+L], target ids [B, L] (pad where target_mask is 0), target_mask [B, L].
    The state at position T-1+j predicts target token j."""
    eos = backbone.tokenizer.eos_token_id
    ids = [(backbone.encode(t)[:max_tokens] + [eos]) for t in texts]
    L = pad_to or max(len(x) for x in ids)
    tmask = torch.tensor([[1] * min(len(x), L) + [0] * (L - len(x)) for x in ids], device=mask.device)
    ids = torch.tensor([(x + [eos] * L)[:L] for x in ids], device=mask.device)
    return (torch.cat([embeds, backbone.embed(ids)], 1), torch.cat([mask, tmask], 1), ids, tmask)


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
        self.search = Search(search_docs) if search_docs else None  # the tool-caller's local document collection
        self.tool_timeout = tool_timeout
        self.topology = TOPOLOGIES[pattern](len(agents))
        self.roles = self.topology.roles
        devices = [device] * len(agents)
        if spread and str(device).startswith("cuda") and torch.cuda.device_count() > 1:  # one GPU per distinct model
            names = list(dict.fromkeys(agents))
            devices = [f"cuda:{names.index(a) % torch.cuda.device_count()}" for a in agents]
        self.backbones = [load_backbone(a, dev, dtype, trust_remote_code) for a, dev in zip(agents, devices)]
        if fast not in FAST_MODES:
            raise UserError(f"unknown --fast '{fast}'; use one of {', '.join(FAST_MODES)}")
        for bb in self.backbones:  # fast.py: static KV cache + CUDA graph for one-token steps ("auto": on CUDA)
            bb.fast = resolve_fast(fast, bb)
        stats = [embedding_stats(bb) for bb in self.backbones]  # (embedding rms, hidden rms)
        ln = variant == "2layer_ln_res"
        self.inner = nn.ModuleDict({
            role: RecursiveLink(bb.hidden_size, bb.hidden_size, "inner", variant,
                                scale=st[0] if ln else st[0] / st[1])
            for role, bb, st in zip(self.roles, self.backbones, stats)})
        self.outer = nn.ModuleDict()
        for s, d in self.topology.edges + self.topology.feedback:
            src, dst = self.backbones[s], self.backbones[d]
            self.outer[f"{self.roles[s]}->{self.roles[d]}"] = RecursiveLink(
                src.hidden_size, dst.hidden_size, "outer", variant,
                scale=stats[d][0] if ln else stats[d][0] / stats[s][0])
        for role, bb in zip(self.roles, self.backbones):  # each link lives on the device of the agent it feeds
            self.inner[role].to(bb.device)
        for s, d in self.topology.edges + self.topology.feedback:
            self.outer[f"{self.roles[s]}->{self.roles[d]}"].to(self.backbones[d].device)

    # --- what each agent reads ------------------------------------------------------------------------------------
    def incoming(self, i, round_):
        """Edges into agent i in this round: [(src, is_feedback)]."""
        t = self.topology
        return [(s, False) for s, d in t.edges if d == i] + [(s, True) for s, d in t.feedback if d == i and round_ > 0]

    def prompt(self, i, question, round_, texts=None):
        """Rendered prompt of agent i; a slot marker where each incoming message goes (text mode: the text).
        A question may be {"first": text for agent 1, "last": text for the others} (the latent-channel task)."""
        if isinstance(question, dict):
            question = question["first"] if i == 0 else question["last"]
        user = f"Question: {question}"
        for s, fb in self.incoming(i, round_):
            name = slot_name(self.roles[s], fb)
            label = (f"Feedback from the {self.roles[s]} (previous round)" if fb else f"Thoughts of the {self.roles[s]}")
            user += f"\n\n{label}: " + (texts[name] if texts is not None else slot(name))
        return self.backbones[i].prompt([{"role": "system", "content": role_prompt(self.roles[i])},
                                         {"role": "user", "content": user}])

    def link_params(self):
        return sum(p.numel() for p in self.parameters())

    # --- the loop -------------------------------------------------------------------------------------------------
    def latent_pass(self, questions, rounds, steps, make_latents=None):
        """Run `rounds` rounds in latent mode; returns the final agent's inputs per round: [(embeds, mask)] * rounds.
        make_latents(i, embeds, mask, round_) -> [B, m, d] overrides the rollout (train_outer.py's teacher mode)."""
        last, inbox, finals = len(self.roles) - 1, [{} for _ in self.roles], []
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
                    thoughts = rollout(bb, self.inner[role], embeds, mask, steps)  # [B, m, d_i]
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
    def run(self, questions, mode="latent", rounds=1, steps=8, max_new_tokens=256, temperature=0.0, top_p=1.0):
        """Answer a batch of questions. Returns one record per question:
        {text, tokens: {role: generated tokens}, latent_steps, seconds (the whole batch's wall time), written (every
        text any agent generated, in order)}."""
        if not questions or any(not q or (isinstance(q, str) and not q.strip()) for q in questions):
            raise UserError("empty question; pass a non-empty --question")
        if mode not in ("latent", "text", "single"):
            raise UserError(f"unknown mode '{mode}'; use latent, text or single")
        B, last, t0 = len(questions), len(self.roles) - 1, _now()
        tokens, written = [{} for _ in questions], [[] for _ in questions]  # written: every text any agent wrote
        gen = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        if mode == "single":  # the final agent alone, no links, no slots
            bb = self.backbones[last]
            prompts = [bb.prompt([{"role": "system", "content": role_prompt(self.roles[last])},
                                  {"role": "user", "content": f"Question: {q}"}]) for q in questions]
            texts, counts, calls = self.answer(last, *build_inputs(bb, prompts, {}), gen)
            latent = 0
        elif mode == "latent":
            embeds, mask = self.latent_pass(questions, rounds, steps)[-1]
            texts, counts, calls = self.answer(last, embeds, mask, gen)
            latent = steps * (rounds * len(self.roles) - 1)
        else:  # Recursive-TextMAS: the same loop, every agent writes text and the next one reads it
            inbox = [{} for _ in self.roles]
            for r in range(rounds):
                for i, (role, bb) in enumerate(zip(self.roles, self.backbones)):
                    prompts = [self.prompt(i, q, r, texts={k: v[b] for k, v in inbox[i].items()})
                               for b, q in enumerate(questions)]
                    if i == last and r == rounds - 1:
                        texts, counts, calls = self.answer(i, *build_inputs(bb, prompts, {}), gen)
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
                     **({"tool_calls": calls[b]} if calls else {})) for b in range(B)]

    def answer(self, i, embeds, mask, gen):
        """Agent i writes the answer. A tool-caller stops at each </python> or </search>, the tool runs, its result is
        appended as <result>...</result>, and decoding goes on (at most MAX_CALLS calls).
        Returns (texts, tokens, tool calls per row or None)."""
        bb = self.backbones[i]
        if _base(self.roles[i]) != "toolcaller":
            return (*bb.generate(embeds, mask, **gen), None)
        B = embeds.shape[0]
        prompt_rows = [embeds[b, mask[b].bool()] for b in range(B)]  # unpadded [T_b, d]
        texts, counts, calls, active = [""] * B, [0] * B, [[] for _ in range(B)], list(range(B))
        while active:
            rows = [torch.cat([prompt_rows[b], bb.embed(torch.tensor(bb.encode(texts[b]) or [], dtype=torch.long,
                                                                      device=bb.device))]) for b in active]
            new, n = bb.generate(*pad_left(rows, bb.hidden_size, bb.device), stop=STOP, **gen)
            still = []
            for b, t, k in zip(active, new, n):
                texts[b], counts[b] = texts[b] + t, counts[b] + k
                call = TOOL_CALL.search(texts[b])
                if call and len(calls[b]) < MAX_CALLS:
                    result = run_tool(call.group(1), call.group(2), self.search, self.tool_timeout)
                    calls[b].append(dict(tool=call.group(1), input=call.group(2).strip(), result=result))
                    texts[b] += f"\n<result>{result}</result>\n"
                    still.append(b)
            active = still
        return texts, counts, calls

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
    """(per-element RMS of the input embeddings, of the last-layer states on a short text), cached per backbone."""
    if not hasattr(bb, "_stats"):
        emb = bb.model.get_input_embeddings().weight.float()
        ids = torch.tensor([bb.encode("The quick brown fox jumps over the lazy dog. 12 + 7 = 19.")], device=bb.device)
        hidden, _ = bb.forward(bb.embed(ids), torch.ones_like(ids))
        bb._stats = (emb.pow(2).mean().sqrt().item(), hidden.float().pow(2).mean().sqrt().item())
    return bb._stats


def _now():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


# ----------------------------------------------------------------------------------------------------------------
# CLI

def system_from_args(a):
    """The System that a CLI's parsed options describe (every script shares --agents, --pattern, --device, ...)."""
    device = pick_device(a.device)
    names, pattern = expand_agents(a.agents, a.pattern)
    system = System(names, pattern, getattr(a, "link_variant", "2layer_ln_res"), device, pick_dtype(a.dtype, device),
                    getattr(a, "trust_remote_code", False), getattr(a, "spread", False),
                    getattr(a, "search_docs", None), getattr(a, "tool_timeout", 10.0), getattr(a, "fast", "auto"))
    if getattr(a, "links", None):
        system.load_links(a.links)
    return system


def main(argv=None):
    p = argparse.ArgumentParser(description="Ask the looped multi-agent system one question.")
    p.add_argument("--agents", default="smollm,smollm",
                   help=f"comma-separated aliases, hub ids, folders or .gguf files; or a preset: {', '.join(PRESETS)}")
    p.add_argument("--mode", default="latent", choices=["latent", "text", "single"])
    p.add_argument("--pattern", default="sequential", choices=list(TOPOLOGIES))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--latent-steps", type=int, default=8)
    p.add_argument("--question", default="What is 12*7?")
    p.add_argument("--links", default=None, help="link checkpoint (path without .safetensors/.json); default untrained")
    p.add_argument("--link-variant", default="2layer_ln_res", choices=VARIANTS)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    add_fast_argument(p)
    p.add_argument("--search-docs", default=None, help="JSONL of {title, text} passages for the <search> tool")
    p.add_argument("--tool-timeout", type=float, default=10.0, help="seconds per <python> call")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    try:
        if not a.question.strip():
            raise UserError("empty question; pass a non-empty --question")
        if a.rounds < 1 or a.latent_steps < 0:
            raise UserError("--rounds must be >= 1 and --latent-steps >= 0")
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

"""
Efficiency, measured side by side in one run (docs/method.md §5): every figure below is a ratio of two things timed
in the same process on the same inputs. Absolute times mean something only for the machine they ran on.

  1. end to end: RecursiveMAS (latent) vs Recursive-TextMAS (text) vs the single agent, r = 1, 2, 3, same questions:
     wall time, generated tokens (each agent's own tokenizer, and one common tiktoken encoding so different
     families compare), latent steps, peak memory; ratios against text at the same r.
  2. latent rollout: KV cache vs the released code's recompute-every-step, m = 16, 32, 80, batch 1 and 16.
  3. training cost on the final agent: outer-link training vs LoRA (PEFT, optional) vs full fine-tuning.
  4. one latent step (fast.py): eager HF forward vs static KV cache vs + CUDA graph vs + torch.compile, against the
     floor = the bytes of the weights a step reads / the memory bandwidth, sampled in turn with the step (a step
     faster than its floor is reported as a measurement error); each mode's error against float32.
  5. the gradient probe (the paper's Theorem 4.1, gradprobe.py): the norm of d(answer CE)/d(agent 1's round-1
     last-layer states) through links (zero-initialised, Kaiming-normal, and trained ones with --links) vs through
     text hand-overs (softmax(logits / T) over the vocabulary, then the expected input embedding), and how confident
     that distribution is.

    python bench.py                                   # CPU: SmolLM2 x2, parts 1-4 ~8-9 minutes on 2 cores
    python bench.py --sizes qwen2.5-1.5b,llama-3.2-1b --device cuda      # paper-sized random models, no weights
    bash scripts/gpu_check.sh                         # on a GPU: the CUDA tests + the step table, one call
    python bench.py --grad-agents tiny-llama,tiny-llama --skip e2e,rollout,train,step   # part 5 alone
Writes runs/bench/bench.json (and PNG plots when matplotlib is installed).
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

import cli
import fast
from recursion import build_inputs, rollout, rollout_recompute, system_from_args
from baselines import add_lora
from files import write_atomic
from errors import UserError
from gradprobe import grad_probe, grad_table
from benchmarks import load_benchmark
from losses import outer_loss
from model import Backbone, EagerDecoder
from protocol import PAPER_ROUNDS, QUICK, pick
from trainer import peak_memory_gb

GSM8K = load_benchmark("gsm8k")[:4]  # the first four GSM8K test questions, and their gold answers stated as asked
QUESTIONS, ANSWERS = [it["question"] for it in GSM8K], [f"The final answer is \\boxed{{{it['gold']}}}." for it in GSM8K]
PARTS = ("e2e", "rollout", "train", "step", "grad")


STEP_MODES = ("off", "static", "graph", "compile")  # fast.py's modes a one-step timing can run


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_gb(device, reset=False):
    """trainer.peak_memory_gb (CUDA: peak allocation; CPU: the whole process's peak RSS), after a reset on CUDA."""
    if reset and str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return peak_memory_gb(device)


def common_tokens(texts):
    """Tokens in one shared encoding (tiktoken cl100k_base; needs TIKTOKEN_CACHE_DIR offline), else None."""
    try:
        import tiktoken
        enc = tiktoken.get_encoding("cl100k_base")
    except Exception:
        return None
    return sum(len(enc.encode(t, disallowed_special=())) for t in texts)


def end_to_end(system, questions, rounds_list, steps, max_new_tokens):
    rows, device = [], system.backbones[-1].device
    plan = [("single", 1)] + [(m, r) for r in rounds_list for m in ("text", "latent")]
    for mode, r in plan:
        peak_gb(device, reset=True)
        t0 = time.perf_counter()
        recs = system.run(questions, mode, r, steps, max_new_tokens)
        sync(device)
        secs = time.perf_counter() - t0
        rows.append(dict(mode=mode, rounds=r, seconds=secs, tokens=sum(sum(x["tokens"].values()) for x in recs),
                         common_tokens=common_tokens([t for x in recs for t in x["written"]]),
                         latent_steps=sum(x["latent_steps"] for x in recs), peak_gb=peak_gb(device)))
        print(f"  {mode:6} r={r}: {secs:6.1f} s, {rows[-1]['tokens']} tokens", flush=True)
    for row in rows:
        text = next((x for x in rows if x["mode"] == "text" and x["rounds"] == row["rounds"]), None)
        if row["mode"] == "latent" and text:
            row["speedup_vs_text"] = text["seconds"] / row["seconds"]
            row["token_reduction_vs_text"] = 1 - row["tokens"] / text["tokens"]
    return rows


def time_it(fn, device, repeats=1, warmup=None):
    (warmup or fn)()  # warm-up (kernels, allocator); a short call where the real one is long
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


@torch.no_grad()
def rollouts(system, ms, batches, max_work=None):
    bb, inner = system.backbones[0], system.inner[system.roles[0]]
    rows = []
    for B in batches:
        prompts = [system.prompt(0, QUESTIONS[b % len(QUESTIONS)], 0) for b in range(B)]
        embeds, mask = build_inputs(bb, prompts, {})
        for m in ms:
            if max_work and B > 1 and B * m > max_work:
                print(f"  batch {B:2d} m={m:3d}: skipped on this device (--rollout-max-work {max_work})")
                continue
            warm = lambda: rollout_recompute(bb, inner, embeds, mask, 2)
            n = 3 if str(bb.device).startswith("cuda") else 2 if B * m <= 32 else 1  # best of n where it is cheap
            kv = min(time_it(lambda: rollout(bb, inner, embeds, mask, m), bb.device, warmup=warm) for _ in range(n))
            rc = min(time_it(lambda: rollout_recompute(bb, inner, embeds, mask, m), bb.device, warmup=warm)
                     for _ in range(n))
            rows.append(dict(batch=B, m=m, kv_seconds=kv, recompute_seconds=rc, speedup=rc / kv,
                             kv_ms_per_step=1000 * kv / m))
            print(f"  batch {B:2d} m={m:3d}: KV {kv:6.2f} s, recompute {rc:6.2f} s, {rc / kv:.1f}x", flush=True)
    return rows


def training_cost(system, steps=3):
    """Seconds per step and peak memory for one answer-CE step on the final agent, three ways."""
    bb, device = system.backbones[-1], system.backbones[-1].device
    rows = [{"question": q, "answer": "The final answer is \\boxed{18}."} for q in QUESTIONS[:2]]
    rounds = 1 if system.topology.edges else 2  # one agent alone: its only outer link is its feedback to itself
    args = argparse.Namespace(rounds=rounds, latent_steps=8, latents="rollout", supervise="final", max_target_tokens=64,
                              grad_ckpt=False)

    def outer_step():
        system.outer.requires_grad_(True)
        loss = outer_loss(system, rows, args)
        loss.backward()
        system.zero_grad(set_to_none=True)

    def plain_step(model):
        prompts = [bb.prompt([{"role": "user", "content": r["question"]}]) + r["answer"] for r in rows]
        ids = bb.tokenizer(prompts, return_tensors="pt", padding=True)["input_ids"].to(device)
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    out = []
    n_outer = sum(p.numel() for p in system.outer.parameters())
    peak_gb(device, reset=True)
    out.append(dict(method="outer links", trainable=n_outer, seconds_per_step=time_it(outer_step, device, steps),
                    peak_gb=peak_gb(device)))
    try:
        lora = add_lora(bb.model, name=bb.name)  # the trained baseline's adapter (baselines.py: r=8, every linear)
        n = sum(p.numel() for p in lora.parameters() if p.requires_grad)
        peak_gb(device, reset=True)
        out.append(dict(method="LoRA r=8 (all)", trainable=n, seconds_per_step=time_it(lambda: plain_step(lora),
                        device, steps), peak_gb=peak_gb(device)))
        lora.unload()  # back to the plain frozen backbone
    except UserError:  # peft is not installed
        out.append(dict(method="LoRA", skipped="pip install peft to include it"))
    bb.model.requires_grad_(True)
    peak_gb(device, reset=True)
    out.append(dict(method="full fine-tuning", trainable=bb.num_params(),
                    seconds_per_step=time_it(lambda: plain_step(bb.model), device, steps), peak_gb=peak_gb(device)))
    bb.model.requires_grad_(False)
    for r in out:
        print(f"  {r['method']:18} " + (r.get("skipped") or f"{r['trainable']:>12,} trainable, "
                                         f"{r['seconds_per_step']:.2f} s/step, peak {r['peak_gb']:.2f} GB"), flush=True)
    return out


def bandwidth(device, repeats=5):
    """Measured memory bandwidth in bytes/s: a large device-to-device copy (bytes read + bytes written)."""
    n = (256 if str(device).startswith("cuda") else 64) * 2**20
    x = torch.randn(n // 4, device=device)
    y = torch.empty_like(x)
    secs = time_it(lambda: y.copy_(x), device, repeats=repeats)
    return 2 * n / secs


def step_bytes(bb):
    """Bytes a latent step must read at least: every decoder-layer weight and the final norm, once (the input
    embeddings and the LM head are not touched by a latent step)."""
    m = bb.lm
    return sum(p.numel() * p.element_size() for p in list(m.layers.parameters()) + list(m.norm.parameters()))


def judge_floor(row):
    """x_floor = step / floor; a step faster than its floor is impossible, so it is reported as a measurement error."""
    if row["ms_per_step"] < row["floor_ms"]:
        row["measurement_error"] = (f"step faster than the floor ({row['ms_per_step']:.3f} < {row['floor_ms']:.3f} "
                                    f"ms), machine busy?")
    else:
        row["x_floor"] = row["ms_per_step"] / row["floor_ms"]


@torch.no_grad()
def step_times(system, batches, modes, prompt_len=64, steps=32, repeats=5):
    """Milliseconds per one-token latent step for each fast mode, each mode's relative error on one step against
    the float32 eager forward (same weights, upcast), and the floor, sampled in turn with the step (a bandwidth
    sample, a step sample, ...; medians of each) so both see the same load. A failing mode is reported, not fatal."""
    rows, seen = [], set()
    for bb in system.backbones:
        if bb.name in seen:
            continue
        seen.add(bb.name)
        nbytes = step_bytes(bb)
        ref_bb = bb if bb.dtype == torch.float32 else Backbone(bb.name, copy.deepcopy(bb.model).float(), bb.tokenizer)
        print(f"  {bb.name}: {nbytes / 2**30:.2f} GiB of weights per step", flush=True)
        for B in batches:
            g = torch.Generator().manual_seed(B)
            embeds = (0.1 * torch.randn(B, prompt_len, bb.hidden_size, generator=g)).to(bb.device, bb.dtype)
            mask = torch.ones(B, prompt_len, dtype=torch.long, device=bb.device)
            inputs = (0.1 * torch.randn(steps, B, 1, bb.hidden_size, generator=g)).to(bb.device, bb.dtype)
            _, cache = ref_bb.forward(embeds.float(), mask)
            ones = torch.ones(B, prompt_len + 1, dtype=torch.long, device=bb.device)
            ref, _ = ref_bb.forward(inputs[0].float(), ones, cache)
            for mode in modes:
                row = dict(model=bb.name.rstrip("/").split("/")[-1], batch=B, mode=mode)
                try:
                    t0 = time.perf_counter()
                    prefill, run, first = _stepper(bb, mode, B, prompt_len + steps, embeds, mask, inputs)
                    row["setup_s"] = time.perf_counter() - t0  # decoder + graph capture (+ compilation)
                    row["rel_error_vs_fp32"] = ((first.float() - ref).norm() / ref.norm()).item()
                    times, floors = [], []
                    for _ in range(repeats):
                        floors.append(1000 * nbytes / bandwidth(bb.device))
                        state = prefill()
                        sync(bb.device)
                        t0 = time.perf_counter()
                        run(state)
                        sync(bb.device)
                        times.append((time.perf_counter() - t0) / steps)
                    row["ms_per_step"] = 1000 * statistics.median(times)
                    row["floor_ms"] = statistics.median(floors)
                    judge_floor(row)
                except Exception as e:  # a mode this machine cannot run (e.g. compile without a compiler)
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
                rows.append(row)
                print("  " + _step_row(row), flush=True)
    return rows


def _stepper(bb, mode, B, need, embeds, mask, inputs):
    """(prefill() -> state, steps(state) -> last output, the first step's output after a fresh prefill) for a mode.
    Only steps() is timed."""
    dec = EagerDecoder(bb) if mode == "off" else fast.StaticDecoder(bb, B, fast.bucket(need), mode)

    def steps(_):
        for e in inputs:
            out = dec.step(e)
        return out
    dec.start(embeds, mask)
    return lambda: dec.start(embeds, mask), steps, dec.step(inputs[0])


def _step_row(r):
    """One row of the step table, printed as it is measured and again in the report."""
    head = f"{r['model']:22} {r['batch']:5d} {r['mode']:8}"
    if "error" in r:
        return f"{head} failed: {r['error']}"
    x = f"{r['x_floor']:8.1f}" if "x_floor" in r else "   error"
    return (f"{head} {r['ms_per_step']:8.3f} {r['floor_ms']:8.3f} {x} {r['rel_error_vs_fp32']:11.1e} "
            f"{r['setup_s']:8.1f}" + (f"  error: {r['measurement_error']}" if "measurement_error" in r else ""))

def report(res):
    print(f"\n== report: {res['machine']}, {res['agents']}, {res['dtype']}")
    if "end_to_end" in res:
        print(f"\n{'method':8} {'r':>2} {'seconds':>8} {'tokens':>7} {'cl100k':>7} {'latent':>7} {'peak GB':>8} "
              f"{'speedup':>8} {'tokens vs text':>15}")
        for r in res["end_to_end"]:
            sp = f"{r['speedup_vs_text']:.2f}x" if "speedup_vs_text" in r else ""
            tr = f"{-100 * r['token_reduction_vs_text']:+.1f}%" if "token_reduction_vs_text" in r else ""
            print(f"{r['mode']:8} {r['rounds']:2d} {r['seconds']:8.1f} {r['tokens']:7d} {str(r['common_tokens']):>7} "
                  f"{r['latent_steps']:7d} {r['peak_gb']:8.2f} {sp:>8} {tr:>15}")
    if "rollout" in res:
        print(f"\n{'batch':>5} {'m':>4} {'KV s':>8} {'recompute s':>12} {'speedup':>8} {'KV ms/step':>11}")
        for r in res["rollout"]:
            print(f"{r['batch']:5d} {r['m']:4d} {r['kv_seconds']:8.2f} {r['recompute_seconds']:12.2f} "
                  f"{r['speedup']:7.1f}x {r['kv_ms_per_step']:11.1f}")
    if "training" in res:
        print(f"\n{'training':18} {'trainable':>12} {'s/step':>8} {'peak GB':>8}")
        for r in res["training"]:
            print(f"{r['method']:18} " + (f"skipped: {r['skipped']}" if "skipped" in r else
                                          f"{r['trainable']:12,} {r['seconds_per_step']:8.2f} {r['peak_gb']:8.2f}"))
    if "step" in res:
        print(f"\n{'one latent step':22} {'batch':>5} {'mode':8} {'ms/step':>8} {'floor ms':>8} {'x floor':>8} "
              f"{'err vs fp32':>11} {'set-up s':>8}")
        for r in res["step"]:
            print(_step_row(r))
        print("(floor = decoder weights read once at the copy bandwidth, sampled in turn with the step; medians)")
    if "grad" in res:
        grad_table(res["grad"], res["grad_agents"])
    print(f"\n({res['seconds']:.0f} s in all)")


def plot(res, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if "end_to_end" in res:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
        for mode in ("text", "latent"):
            rows = [r for r in res["end_to_end"] if r["mode"] == mode]
            ax[0].plot([r["rounds"] for r in rows], [r["seconds"] for r in rows], "o-", label=mode)
            ax[1].plot([r["rounds"] for r in rows], [r["tokens"] for r in rows], "o-", label=mode)
        ax[0].set(xlabel="rounds", ylabel="seconds")
        ax[1].set(xlabel="rounds", ylabel="generated tokens")
        ax[0].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "end_to_end.png"))


def parser():
    p = cli.Parser(description="Speed, tokens and memory: latent vs text vs single, KV vs recompute, training cost; "
                               "and the gradient probe. Part 1 runs r = 1 .. --rounds (here the paper's 3 "
                               "unless given).", epilog="example: python bench.py --skip rollout,step --rounds 2")
    cli.add_answering_args(p)
    cli.add_out_args(p, resumable=False)
    p.add_argument("--sizes", default=None, type=cli.random_sizes,
                   help=f"instead of --agents: random-initialised models in the shapes of the paper's backbones, "
                        f"no weights needed; comma-separated from {', '.join(cli.SIZES)}")
    p.add_argument("--questions", type=cli.checked(int, lambda v: 1 <= v <= len(QUESTIONS), f"a number from 1 to "
                                                   f"{len(QUESTIONS)}"), default=4, help="questions per measurement")
    p.add_argument("--rollout-m", default="16,32,80", type=cli.list_of(cli.positive_int), help="m for KV vs recompute")
    p.add_argument("--rollout-batch", default="1,16", type=cli.list_of(cli.positive_int),
                   help="batch sizes for KV vs recompute")
    p.add_argument("--rollout-max-work", type=cli.positive_int, default=16 * 16,
                   help="skip recompute runs with batch x m above this on a CPU (recompute at batch 16, m=80 takes "
                        "minutes there); no limit on CUDA")
    p.add_argument("--step-batch", default=None, type=cli.list_of(cli.positive_int),
                   help="batch sizes for part 4; default: 1 on a CPU, 1,16 on CUDA")
    p.add_argument("--step-modes", default=None, type=cli.list_of(str, STEP_MODES, "mode"),
                   help="fast.py modes to time in part 4; default: off,static on a CPU (compile takes minutes there), "
                        "off,static,graph,compile on CUDA")
    p.add_argument("--grad-agents", default=None, type=cli.agent_names,
                   help="agents for part 5 (default: --agents); the text hand-over needs one vocabulary")
    p.add_argument("--grad-temperature", default="1", type=cli.list_of(cli.positive_float),
                   help="softmax temperatures of the text hand-over in part 5, e.g. 1,0.1")
    p.add_argument("--skip", default=[], type=cli.list_of(str, PARTS, "part"),
                   help=f"comma-separated parts to skip: {','.join(PARTS)}")
    return p


def bench(a):
    skip, out = set(a.skip), a.out or os.path.join("runs", "bench")
    rounds = list(range(1, (a.rounds or PAPER_ROUNDS) + 1))  # r = 1 .. --rounds (default: the paper's 3)
    m, max_new = pick(a, QUICK, "latent_steps"), pick(a, QUICK, "max_new_tokens")
    torch.manual_seed(a.seed)
    a.agents = a.sizes or a.agents  # random-initialised models in the paper backbones' shapes, instead of --agents
    own_grad = a.grad_agents and "grad" not in skip  # part 5 on agents of its own
    system = system_from_args(a) if set(PARTS[:4]) - skip or not own_grad else None
    grad_system = system_from_args(argparse.Namespace(**dict(vars(a), agents=a.grad_agents))) if own_grad else system
    shown = system or grad_system  # the report names the agents that ran (part 5 alone: --grad-agents)
    device = str(shown.backbones[-1].device)
    cuda = device.startswith("cuda")
    machine = (torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores, "
               f"{torch.get_num_threads()} threads")
    res = dict(agents=",".join(shown.agent_names), device=device, machine=machine, dtype=str(shown.backbones[0].dtype),
               latent_steps=m, questions=a.questions, max_new_tokens=max_new)
    t0 = time.time()
    if "e2e" not in skip:
        print(f"end to end on {a.questions} questions, m={m}, {max_new} new tokens max")
        res["end_to_end"] = end_to_end(system, QUESTIONS[:a.questions], rounds, m, max_new)
    if "rollout" not in skip:
        print("latent rollout, KV cache vs recompute")
        res["rollout"] = rollouts(system, a.rollout_m, a.rollout_batch, None if cuda else a.rollout_max_work)
    if "train" not in skip:
        print("training cost on the final agent (batch 2)")
        res["training"] = training_cost(system)
    if "step" not in skip:
        modes = a.step_modes or (list(STEP_MODES) if cuda else ["off", "static"])
        print("one latent step: eager vs fast.py, against the weight-read floor (sampled in turn with the step)")
        res["step"] = step_times(system, a.step_batch or ([1, 16] if cuda else [1]), modes)
    if "grad" not in skip:
        print(f"gradient reaching agent 1's round-1 last-layer states ({','.join(grad_system.agent_names)}, "
              f"m={m}, {a.questions} questions): links vs text hand-overs")
        res["grad_agents"] = ",".join(grad_system.agent_names)
        res["grad"] = grad_probe(grad_system, QUESTIONS[:a.questions], ANSWERS[:a.questions], rounds, m,
                                 a.grad_temperature, trained=bool(a.links))
    res["seconds"] = time.time() - t0
    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, "bench.json"), json.dumps(res, indent=1))  # never half a report
    report(res)
    plot(res, out)


def main(argv=None):
    return cli.main(parser(), bench, argv)


if __name__ == "__main__":
    sys.exit(main())

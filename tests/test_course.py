"""The course's grading tests (assignments/): small, fast checks of the functions each assignment asks for, on tiny
random models. assignments/grade.py runs the ones each assignment's header lists; on the reference they all pass."""
import types

import pytest
import torch
import torch.nn.functional as F

import losses
import bench
from recursion import System, build_inputs, rollout, rollout_recompute
from links import VARIANTS, RecursiveLink
from errors import UserError
from loading import load_backbone
from model import positions, slot
from patterns import TOPOLOGIES, slot_name
from losses import append_targets
from helpers import TINY, UNEVEN_ROWS as ROWS, loss_args as _args, perturb as _perturb, three_prompts


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run much faster on one thread than on two contended ones; restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- assignment 1: RecursiveLink ------------------------------------------------------------------------------

def _affine(lin, x):
    return x @ lin.weight.T + (lin.bias if lin.bias is not None else 0)


def _link_by_hand(link, x):
    """The variants' equations, written out (links.py's docstring), in float64."""
    layers, residual, layer_norm = VARIANTS[link.variant]
    skip = x if link.kind == "inner" else (x @ link.W3.weight.T if link.W3 is not None else None)
    if layer_norm:  # 2layer_ln_res
        h = F.layer_norm(x, (link.d_in,), link.ln_in.weight, link.ln_in.bias, link.ln_in.eps)
        y = F.layer_norm(skip + _affine(link.W2, F.gelu(_affine(link.W1, h))), (link.d_out,),
                         link.ln_out.weight, link.ln_out.bias, link.ln_out.eps)
    elif layers == 2:
        y = _affine(link.W2, F.gelu(_affine(link.W1, x)))
    else:
        y = _affine(link.W1, x)
    if residual and not layer_norm:
        y = skip + y
    return link.scale * y


def _scale(variant, in_rms, out_rms):
    """The fixed output scale: out_rms after a LayerNorm (unit RMS already), else out_rms / in_rms."""
    return out_rms if VARIANTS[variant][2] else out_rms / in_rms


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind,d_in,d_out", [("inner", 8, 8), ("outer", 8, 12)])
def test_a1_variants_follow_their_equations(variant, kind, d_in, d_out, monkeypatch):
    monkeypatch.setattr(RecursiveLink, "_init_near_identity", lambda self: None)  # every branch non-zero
    torch.manual_seed(0)
    link = RecursiveLink(d_in, d_out, kind, variant, in_rms=2.0, out_rms=1.4).double()
    assert link.scale.item() == pytest.approx(_scale(variant, 2.0, 1.4))  # 1.4 or 0.7: never 1, so it is checked
    with torch.no_grad():
        for p in link.parameters():
            p.copy_(0.5 * torch.randn_like(p))
        x = torch.randn(2, 3, d_in)  # float32 in, a float64 link: computed in float64, returned in float32
        y = link(x)
        assert y.shape == (2, 3, d_out) and y.dtype == torch.float32
        torch.testing.assert_close(y, _link_by_hand(link, x.double()).float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind,d_in,d_out", [("inner", 8, 8), ("outer", 8, 8), ("outer", 8, 12), ("outer", 12, 8)])
def test_a1_untrained_link_is_identity_times_scale(variant, kind, d_in, d_out):
    link = RecursiveLink(d_in, d_out, kind, variant, in_rms=4.0, out_rms=2.0).double()  # scale 2 (LN) or 0.5
    x = torch.randn(4, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = link(x)
    if link.W3 is not None:  # outer residual: W3 = I when square, else it keeps the per-element RMS:
        W3 = link.W3.weight  # wider (W3^T W3 = d_out/d_in I) or narrower (orthonormal rows, W3 W3^T = I)
        if d_out >= d_in:
            torch.testing.assert_close(W3.T @ W3, d_out / d_in * torch.eye(d_in, dtype=W3.dtype), rtol=1e-6, atol=1e-6)
        else:
            torch.testing.assert_close(W3 @ W3.T, torch.eye(d_out, dtype=W3.dtype), rtol=1e-6, atol=1e-6)
        if d_in == d_out:
            torch.testing.assert_close(W3, torch.eye(d_in, dtype=W3.dtype))
    if variant == "2layer" or (d_in != d_out and variant != "2layer_ln_res" and link.W3 is None):
        return  # no identity-like start for these
    skip = x if d_in == d_out else x @ link.W3.weight.T
    want = F.layer_norm(skip, (d_out,)) if variant == "2layer_ln_res" else skip
    torch.testing.assert_close(y, _scale(variant, 4.0, 2.0) * want, rtol=1e-6, atol=1e-6)


def test_a1_parameter_counts():
    assert RecursiveLink(2560, 2560, "inner", "2layer_ln_res").num_params() == 13_122_560  # the paper's 13.12M
    # outer LN link 64 -> 96: W1 64x192+192, W2 192x96+96, W3 64x96, two LayerNorms 2x64 + 2x96
    assert RecursiveLink(64, 96, "outer", "2layer_ln_res").num_params() == 12_480 + 18_528 + 6_144 + 320
    assert RecursiveLink(64, 64, "inner", "1layer").num_params() == 64 * 64 + 64


# ---- assignment 2: the latent rollout -------------------------------------------------------------------------

def test_a2_positions_count_each_rows_real_tokens():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    full = positions(mask, 6)
    assert full.shape == (3, 6)
    assert full[mask.bool()].tolist() == [0, 1, 2, 3] + [0, 1, 2, 3, 4, 5] + [0, 1, 2, 3, 4]
    assert positions(mask, 1).tolist() == [[3], [5], [4]]  # one new input after a cache: the row's own count
    assert positions(mask, 2).tolist() == [[2, 3], [4, 5], [3, 4]]


def _rollout_setup(name):
    system = System([name])
    bb, inner = system.backbones[0], system.inner["solver"]
    _perturb(inner)
    embeds, mask = build_inputs(bb, three_prompts(bb), {})
    assert len(set(mask.sum(1).tolist())) == 3  # three lengths: real left padding
    return bb, inner, embeds, mask


@pytest.mark.parametrize("name", TINY)
def test_a2_cached_rollout_equals_recompute(name, monkeypatch):
    bb, inner, embeds, mask = _rollout_setup(name)
    seen, real = [], bb.forward
    monkeypatch.setattr(bb, "forward", lambda e, m, cache=None: seen.append(e.shape[1]) or real(e, m, cache))
    with torch.no_grad():
        cached = rollout(bb, inner, embeds, mask, 5)
        monkeypatch.setattr(bb, "forward", real)
        reference = rollout_recompute(bb, inner, embeds, mask, 5)
    assert cached.shape == (3, 5, bb.hidden_size)
    torch.testing.assert_close(cached, reference, rtol=1e-4, atol=1e-4)
    assert seen[0] == embeds.shape[1] and set(seen[1:]) == {1} and len(seen) in (5, 6), seen  # one prefill, then 1-token steps


@pytest.mark.parametrize("name", TINY)
def test_a2_rollout_is_batch_invariant(name):
    bb, inner, embeds, mask = _rollout_setup(name)
    with torch.no_grad():
        batched = rollout(bb, inner, embeds, mask, 4)
        for b, p in enumerate(three_prompts(bb)):
            torch.testing.assert_close(batched[b:b + 1], rollout(bb, inner, *build_inputs(bb, [p], {}), 4),
                                       rtol=1e-4, atol=1e-4)


def test_a2_first_thought_and_zero_steps():
    bb, inner, embeds, mask = _rollout_setup("tiny-llama")
    with torch.no_grad():
        assert rollout(bb, inner, embeds, mask, 0).shape == (3, 0, bb.hidden_size)
        hidden, _ = bb.forward(embeds, mask)
        torch.testing.assert_close(rollout(bb, inner, embeds, mask, 1)[:, 0], inner(hidden[:, -1]))


# ---- assignment 3: a collaboration pattern (debate) ------------------------------------------------------------

DEBATE = ["tiny-llama", "tiny-qwen", "tiny-llama"]


def test_a3_debate_is_who_feeds_whom():
    t = TOPOLOGIES["debate"](3)
    assert t.roles == ["planner0", "planner1", "solver"]
    assert sorted(t.edges) == [(0, 2), (1, 2)] and sorted(t.feedback) == [(2, 0), (2, 1)]
    for n in (2, 4):
        with pytest.raises(UserError, match="debate"):
            TOPOLOGIES["debate"](n)
    system = System(DEBATE, "debate")
    assert set(system.outer) == {"planner0->solver", "planner1->solver", "solver->planner0", "solver->planner1"}
    solver_prompt = system.prompt(2, "Q?", 0)
    assert slot(slot_name("planner0", False)) in solver_prompt and slot(slot_name("planner1", False)) in solver_prompt
    assert slot(slot_name("solver", True)) in system.prompt(1, "Q?", 1)
    assert "<|slot:" not in system.prompt(0, "Q?", 0)  # round 1: no feedback yet


def test_a3_debate_runs_in_latent_text_and_single_mode():
    system = System(DEBATE, "debate")
    seen = []
    for name, link in system.outer.items():
        link.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, tuple(out.shape))))
    rec = system.run(["What is 2+3?", "Name a colour."], "latent", rounds=2, latent_steps=2, max_new_tokens=3)[0]
    d = {"planner0": 64, "planner1": 96, "solver": 64}
    assert sorted(seen) == sorted([(f"{p}->solver", (2, 2, 64)) for p in ("planner0", "planner1")] * 2 +
                                  [(f"solver->{p}", (2, 2, d[p])) for p in ("planner0", "planner1")])
    assert rec["latent_steps"] == 2 * (2 * 3 - 1) and set(rec["tokens"]) == {"solver"}
    text = system.run(["What is 2+3?"], "text", rounds=2, latent_steps=0, max_new_tokens=3)[0]
    assert set(text["tokens"]) == {"planner0", "planner1", "solver"} and len(text["written"]) == 6
    single = system.run(["What is 2+3?"], "single", max_new_tokens=3)[0]
    assert set(single["tokens"]) == {"solver"} and single["latent_steps"] == 0


def test_a3_debate_trains_every_outer_link():
    torch.manual_seed(0)
    system = System(DEBATE, "debate")
    system.inner.requires_grad_(False)
    losses.outer_loss(system, ROWS[:2], _args()).backward()
    for name, link in system.outer.items():
        assert sum(p.grad.abs().sum().item() for p in link.parameters() if p.grad is not None) > 0, name
    opt = torch.optim.AdamW(system.outer.parameters(), lr=1e-2)
    seen = []
    for step in range(5):
        loss = losses.outer_loss(system, ROWS[:2], _args())
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(loss.item())
    assert seen[-1] < 0.97 * seen[0], seen  # AdamW on the four outer links lowers the answer CE


# ---- assignment 4: inner-loop training ------------------------------------------------------------------------

def _inner_by_hand(system, rows, max_tokens):
    total = 0.0
    for i, (role, bb) in enumerate(zip(system.roles, system.backbones)):
        # the solver reads the planner's gold plan, as text, where the loop puts the planner's latents
        prompts = [system.prompt(i, r["question"], 0, texts={"from_planner": r["plan"]} if role == "solver" else None)
                   for r in rows]
        embeds, mask = build_inputs(bb, prompts, {})
        T = embeds.shape[1]
        field = {"planner": "plan", "solver": "answer"}[role]
        full, full_mask, ids, tmask = append_targets(bb, embeds, mask, [r[field] for r in rows], max_tokens)
        hidden, _ = bb.forward(full, full_mask)
        cos = F.cosine_similarity(system.inner[role](hidden[:, T - 1:-1]), bb.embed(ids), dim=-1)  # state t vs token t+1
        total = total + ((1 - cos) * tmask).sum() / tmask.sum()
    return total / len(system.roles)


def test_a4_inner_loss_value():
    system = System(TINY)
    for link in system.inner.values():
        _perturb(link, 0.1)
    with torch.no_grad():
        got = losses.inner_loss(system, ROWS[:2], 12)
        torch.testing.assert_close(got, _inner_by_hand(system, ROWS[:2], 12), rtol=1e-5, atol=1e-6)
        assert 0 < got.item() < 2


def test_a4_target_is_the_next_tokens_embedding(monkeypatch):
    """A backbone whose state at every position IS the next input embedding, and identity inner links: a loss that
    compares R_in(h_t) with Emb(x_{t+1}) is exactly 0; compared with Emb(x_t) it is not."""
    system = System(TINY)
    for role, bb in zip(system.roles, system.backbones):
        system.inner[role] = torch.nn.Identity()
        monkeypatch.setattr(bb, "forward", lambda e, m, cache=None: (torch.cat([e[:, 1:], 0 * e[:, :1]], 1), None))
    with torch.no_grad():
        assert losses.inner_loss(system, ROWS[:3], 12).item() < 1e-6
        for bb in system.backbones:
            monkeypatch.setattr(bb, "forward", lambda e, m, cache=None: (e, None))  # h_t = Emb(x_t): one off
        assert losses.inner_loss(system, ROWS[:3], 12).item() > 0.1


def test_a4_gradients_reach_the_inner_links_only():
    system = System(TINY)
    system.outer.requires_grad_(False)
    losses.inner_loss(system, ROWS[:2], 12).backward()
    for role, link in system.inner.items():
        assert link.W2.weight.grad is not None and link.W2.weight.grad.abs().sum() > 0, role
    assert all(p.grad is None for p in system.outer.parameters())
    assert all(p.grad is None for bb in system.backbones for p in bb.model.parameters())


# ---- assignment 5: outer-loop training through rounds ---------------------------------------------------------

def test_a5_answer_ce_is_the_models_own_cross_entropy():
    bb = load_backbone("tiny-qwen")
    prompts = [bb.prompt([{"role": "user", "content": q}]) for q in ("Hi?", "What is 13 + 25, exactly?")]
    answers = ["\\boxed{4}", "It is \\boxed{38}, I think."]
    embeds, mask = build_inputs(bb, prompts, {})
    for max_tokens in (40, 5):
        with torch.no_grad():
            got = losses.answer_ce(bb, embeds, mask, answers, max_tokens)
            per_token = []
            for p, a in zip(prompts, answers):
                ids = bb.encode(a)  # a cut answer gets no end token: the model must not learn to stop mid-text
                target = ids[:max_tokens] if len(ids) > max_tokens else ids + [bb.tokenizer.eos_token_id]
                ids = torch.tensor([bb.encode(p) + target])
                logits = bb.model(input_ids=ids).logits[0, -len(target) - 1:-1]
                per_token.append(F.cross_entropy(logits, torch.tensor(target), reduction="none"))
        torch.testing.assert_close(got, torch.cat(per_token).mean(), rtol=1e-4, atol=1e-5)


def test_a5_outer_loss_is_the_final_rounds_answer_ce():
    system = System(TINY)
    with torch.no_grad():
        finals = system.latent_pass([r["question"] for r in ROWS[:2]], 2, 2)
        ces = [losses.answer_ce(system.backbones[-1], e, m, [r["answer"] for r in ROWS[:2]], 16)
               for e, m in finals]
        torch.testing.assert_close(losses.outer_loss(system, ROWS[:2], _args()), ces[-1])
        torch.testing.assert_close(losses.outer_loss(system, ROWS[:2], _args(supervise="all")),
                                   ces[-1] + 0.1 * ces[0])


def test_a5_gradient_flows_back_through_round_1():
    """The planner's round-1 thoughts reach the answer only through the solver's round-1 rollout, the feedback link
    and the planner's round-2 rollout: the answer CE's gradient must reach them."""
    system = System(TINY)
    system.inner.requires_grad_(False)
    inputs = []

    def round_1_as_leaf(mod, inp):  # round 1: the planner's thoughts become a leaf we can read the gradient of
        inputs.append(inp[0] if inputs else inp[0].detach().requires_grad_())
        return (inputs[-1],)
    system.outer["planner->solver"].register_forward_pre_hook(round_1_as_leaf)
    losses.outer_loss(system, ROWS[:2], _args(rounds=2)).backward()
    assert len(inputs) == 2, "planner->solver should be used once per round"
    assert inputs[0].grad is not None and inputs[0].grad.abs().sum() > 0, "no gradient reaches round 1"


def test_a5_teacher_latents_leak_the_gold_answer():
    """Teacher forcing feeds each agent's hidden states over its GOLD text: the solver's gold text is the answer, and
    it reaches the planner as feedback, so round 2 sees the gold answer. Rollout latents never read it."""
    system = System(TINY)
    _perturb(system.outer, 0.05)
    other = [dict(r, answer=r["answer"].replace("\\boxed", "the answer: \\boxed")) for r in ROWS[:2]]
    questions = [r["question"] for r in ROWS[:2]]
    with torch.no_grad():
        bb = system.backbones[0]
        embeds, mask = build_inputs(bb, [system.prompt(0, q, 0) for q in questions], {})
        got = losses.teacher_latents(system, ROWS[:2], 3)(0, embeds, mask, 0)
        ids = torch.tensor([bb.encode(r["plan"])[:3] for r in ROWS[:2]])  # the planner's gold text, first m tokens
        hidden, _ = bb.forward(torch.cat([embeds, bb.embed(ids)], 1), torch.cat([mask, torch.ones_like(ids)], 1))
        torch.testing.assert_close(got, system.inner["planner"](hidden[:, -3:]), rtol=1e-5, atol=1e-6)
        runs = {kind: [system.latent_pass(questions, 2, 3, make) for make in makes] for kind, makes in [
            ("teacher", [losses.teacher_latents(system, rows, 3) for rows in (ROWS[:2], other)]),
            ("rollout", [None, None])]}
    same = lambda a, b: torch.equal(a[0], b[0])
    (t1, t2), (r1, r2) = runs["teacher"], runs["rollout"]
    assert same(t1[0], t2[0]) and not same(t1[1], t2[1])  # the gold answer reaches round 2
    assert same(r1[0], r2[0]) and same(r1[1], r2[1])


# ---- assignment 6: measure it --------------------------------------------------------------------------------

def test_a6_time_it_times_only_the_repeats(monkeypatch):
    clock, calls = [0.0], []
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def work():
        calls.append("work")
        clock[0] += 2.0

    def warm():
        calls.append("warm")
        clock[0] += 100.0
    assert bench.time_it(work, "cpu", repeats=3, warmup=warm) == pytest.approx(2.0)
    assert calls == ["warm", "work", "work", "work"]
    calls.clear()
    assert bench.time_it(work, "cpu") == pytest.approx(2.0) and calls == ["work", "work"]  # warm-up = one extra call


def test_a6_end_to_end_counts_every_agents_tokens():
    system = System(TINY)
    qs = ["What is 2+3?", "Name a colour."]
    rows = bench.end_to_end(system, qs, [1, 2], 2, 3)
    assert [(r["mode"], r["rounds"]) for r in rows] == [("single", 1), ("text", 1), ("latent", 1), ("text", 2),
                                                          ("latent", 2)]
    by = {(r["mode"], r["rounds"]): r for r in rows}
    for (mode, r), row in by.items():
        recs = system.run(qs, mode, r, 2, 3)
        assert row["tokens"] == sum(sum(x["tokens"].values()) for x in recs), (mode, r)
        assert row["latent_steps"] == sum(x["latent_steps"] for x in recs), (mode, r)
        assert row["common_tokens"] == bench.common_tokens([t for x in recs for t in x["written"]]), (mode, r)
        assert row["seconds"] > 0 and row["peak_gb"] > 0
    for r in (1, 2):
        lat, txt = by[("latent", r)], by[("text", r)]
        assert lat["speedup_vs_text"] == pytest.approx(txt["seconds"] / lat["seconds"])
        assert lat["token_reduction_vs_text"] == pytest.approx(1 - lat["tokens"] / txt["tokens"])
        assert "speedup_vs_text" not in txt and "speedup_vs_text" not in by[("single", 1)]

"""bench.py end to end on tiny models: every part runs, the JSON holds what the README's tables read; the gradient
probe's norms equal norms computed by hand (the tables' figures: test_bench_figures.py)."""
import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import bench
from recursion import System, build_inputs, rollout
from conftest import needs_smollm
from gradprobe import LinkHandover, TextHandover, first_states_grad, grad_probe, grad_table, reinit
from losses import answer_ce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_runs_every_part_and_writes_json(tmp_path):
    cmd = [sys.executable, "bench.py", "--agents", "tiny-llama,tiny-qwen", "--questions", "2", "--rounds", "2",
           "--latent-steps", "3", "--max-new-tokens", "6", "--rollout-m", "2,4", "--rollout-batch", "1,2",
           "--step-modes", "off,static", "--out", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.load(open(tmp_path / "bench.json"))
    modes = [(r["mode"], r["rounds"]) for r in res["end_to_end"]]
    assert modes == [("single", 1), ("text", 1), ("latent", 1), ("text", 2), ("latent", 2)]
    for r in res["end_to_end"]:
        assert r["tokens"] > 0 and r["seconds"] > 0
        assert r["latent_steps"] == (0 if r["mode"] != "latent" else 2 * 3 * (2 * r["rounds"] - 1))
        assert ("speedup_vs_text" in r) == (r["mode"] == "latent")
    assert [(r["batch"], r["m"]) for r in res["rollout"]] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert [r["method"] for r in res["training"]][0] == "outer links"
    assert res["training"][0]["trainable"] > 0
    steps = {(r["model"], r["mode"]): r for r in res["step"]}
    assert set(steps) == {(m, x) for m in ("tiny-llama", "tiny-qwen") for x in ("off", "static")}
    for r in steps.values():
        assert "error" not in r and r["ms_per_step"] > 0 and r["floor_ms"] > 0
        assert r["rel_error_vs_fp32"] < 1e-5
    assert "one latent step" in run.stdout and "== report" in run.stdout
    assert [r["rounds"] for r in res["grad"]] == [1, 2] and res["grad_agents"] == "tiny-llama,tiny-qwen"
    for r in res["grad"]:  # the two tiny models share one byte-level vocabulary, so the text hand-over runs
        assert set(r["links"]) == {"zero", "kaiming"} and len(r["link_norm_per_step"]["zero"]) == 3
        assert all(0 < v < math.inf for v in [*r["links"].values(), r["text_norm"]])
        assert 0 < r["text_max_prob"] <= 1 and 0 <= r["text_entropy"] <= math.log(r["vocab"]) + 1e-6
    assert "grad norm, tiny-llama,tiny-qwen" in run.stdout


def test_bench_sizes_rejects_unknown_names():
    run = subprocess.run([sys.executable, "bench.py", "--sizes", "gpt-5"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "unknown --sizes entry 'gpt-5'" in run.stderr and "Traceback" not in run.stderr


def _states_by_hand(bb, feed, embeds, mask, m):
    """The m last-layer states a rollout reads, by re-running the whole sequence each step (Backbone.forward, no KV
    cache: another code path than the probe's), feeding feed(h) back; no gradient."""
    hs = []
    with torch.no_grad():
        for _ in range(m):
            h = bb.forward(embeds, mask)[0][:, -1:]
            hs.append(h)
            embeds, mask = torch.cat([embeds, feed(h)], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.cat(hs, 1)


def test_grad_probe_norms_equal_norms_by_hand():
    """Agent 1's round-1 last-layer states H as a leaf; the answer CE's gradient norm on H, by hand: at r=1 through
    outer(inner(H)) with the default (zero-branch) links, with Kaiming-normal ones and with 'trained' (here: perturbed)
    ones, and through softmax(logits(H) / T) @ E with every rollout fed soft tokens; at r=2 through the default links
    and the solver's rollout. Feeding the text hand-over inner(H), or a pre-norm state, changes text_norm."""
    torch.manual_seed(0)
    system = System(["tiny-llama", "tiny-llama"])
    qs, answers, m, T = bench.QUESTIONS[:2], bench.ANSWERS[:2], 3, 0.5
    p, s = system.backbones
    default = {k: copy.deepcopy(v) for k, v in list(system.inner.items()) + list(system.outer.items())}
    with torch.no_grad():  # "trained" links: the residual branches moved off zero
        for link in list(system.inner.values()) + list(system.outer.values()):
            link.W2.weight.normal_(0, 0.05)
    rows = grad_probe(system, qs, answers, [1, 2], m, [T], trained=True)
    assert all(not isinstance(v, (LinkHandover, TextHandover)) for v in system.outer.values())  # links put back
    E = p.model.get_input_embeddings().weight

    def text(h):
        return torch.softmax(p.logits(h).float() / T, -1) @ E

    def grad_norm(feed, send):
        """r=1: (|dCE/dH|, |dCE/dH| / |dCE/dM|, |M| / |H|); H: the planner's states under `feed`, M = send(H)."""
        H = _states_by_hand(p, feed, *build_inputs(p, [system.prompt(0, q, 0) for q in qs], {}), m)
        H.requires_grad_(True)
        M = send(H)
        loss = answer_ce(s, *build_inputs(s, [system.prompt(1, q, 0) for q in qs], {"from_planner": M}), answers, 64)
        gH, gM = torch.autograd.grad(loss, [H, M])
        return gH.norm().item(), gH.norm().item() / gM.norm().item(), M.norm().item() / H.norm().item()

    links = {"zero": (default["planner"], default["planner->solver"]),
             "kaiming": tuple(reinit(x, "kaiming") for x in (system.inner["planner"], system.outer["planner->solver"])),
             "trained": (system.inner["planner"], system.outer["planner->solver"])}
    for kind, (inner, outer) in links.items():
        got = rows[0]["links"][kind], rows[0]["link_gain"][kind], rows[0]["link_scale"][kind]
        assert got == pytest.approx(grad_norm(inner, lambda H: outer(inner(H))), rel=1e-4), kind
    by_hand_text, *text_gain_scale = grad_norm(text, text)
    got = rows[0]["text_norm"], rows[0]["text_gain"], rows[0]["text_scale"]
    assert got == pytest.approx((by_hand_text, *text_gain_scale), rel=1e-4)
    assert rows[0]["text_over"]["zero"] == pytest.approx(by_hand_text / rows[0]["links"]["zero"], rel=1e-6)
    # the wrong states give another norm (so the check above can tell them apart)
    assert by_hand_text != pytest.approx(grad_norm(text, lambda H: text(links["zero"][0](H)))[0], rel=1e-2)
    assert len({round(v, 12) for v in rows[0]["links"].values()}) == 3  # the three kinds of link differ
    # r=2, default links: planner states -> solver rollout -> feedback -> planner's round-2 rollout -> solver answers
    inner_p, inner_s, out_ps, out_sp = (default[k] for k in ("planner", "solver", "planner->solver", "solver->planner"))
    H = _states_by_hand(p, inner_p, *build_inputs(p, [system.prompt(0, q, 0) for q in qs], {}), m).requires_grad_(True)
    solver_in = lambda r, inbox: build_inputs(s, [system.prompt(1, q, r) for q in qs], inbox)
    M = out_ps(inner_p(H))  # the one message made from H; the gain is read on it, not on later messages
    solver_thoughts = rollout(s, inner_s, *solver_in(0, {"from_planner": M}), m)
    planner_in = build_inputs(p, [system.prompt(0, q, 1) for q in qs], {"feedback_solver": out_sp(solver_thoughts)})
    planner_thoughts = rollout(p, inner_p, *planner_in, m)
    loss = answer_ce(s, *solver_in(1, {"from_planner": out_ps(planner_thoughts)}), answers, 64)
    gH, gM = (g.norm().item() for g in torch.autograd.grad(loss, [H, M]))
    assert (rows[1]["links"]["zero"], rows[1]["link_gain"]["zero"]) == pytest.approx((gH, gH / gM), rel=1e-4)
    assert math.hypot(*rows[0]["link_norm_per_step"]["zero"]) == pytest.approx(rows[0]["links"]["zero"], rel=1e-5)


def test_kaiming_links_are_kaiming_normal_and_zero_links_are_the_default():
    torch.manual_seed(0)
    link = System(["tiny-llama", "tiny-llama"]).outer["planner->solver"]
    k, z = reinit(link, "kaiming"), reinit(link, "zero")
    for w in (k.W1.weight, k.W2.weight):
        assert w.std().item() == pytest.approx(math.sqrt(2 / w.shape[1]), rel=0.1)
    assert k.W1.bias.abs().max() == k.W2.bias.abs().max() == 0
    assert torch.equal(k.W3.weight, link.W3.weight) and torch.equal(k.scale, link.scale)
    assert z.W2.weight.abs().max() == 0 and torch.equal(z.W3.weight, link.W3.weight)
    x = torch.randn(2, 3, link.d_in)
    assert torch.allclose(z(x), link(x)) and not torch.allclose(k(x), link(x))


def test_a_saturated_softmax_passes_no_gradient(capsys):
    """The theorem's limit: at T -> 0 every next-token distribution is one-hot and the text path passes exactly
    nothing (no gain to divide: '-'), while the links still pass their share."""
    system = System(["tiny-llama", "tiny-llama"])
    (row,) = grad_probe(system, bench.QUESTIONS[:1], bench.ANSWERS[:1], [2], 2, [1e-6])
    assert row["text_norm"] == 0 and row["text_gain"] is None and row["text_max_prob"] == pytest.approx(1)
    assert all(v > 0 for v in row["links"].values()) and all(v > 0 for v in row["link_gain"].values())
    capsys.readouterr()
    grad_table([row], "tiny-llama,tiny-llama")
    assert "         - " in capsys.readouterr().out


@pytest.mark.parametrize("name", ["tiny-llama", pytest.param("smollm", marks=needs_smollm)])
@pytest.mark.parametrize("T", [1.0, 0.1])
def test_text_handover_reads_the_state_the_model_makes_its_logits_from(name, T):
    """The probe's text hand-over distribution at each of agent 1's m rollout states equals softmax(the HF model's
    own logits at that position / T), the rollout fed soft tokens by hand through the HF model (inputs_embeds); the
    probe's reported entropy and max probability are those of these distributions."""
    system = System([name, name])
    bb, m, q = system.backbones[0], 4, bench.QUESTIONS[:1]
    embeds, _ = build_inputs(bb, [system.prompt(0, q[0], 0)], {})
    E, ps = bb.model.get_input_embeddings().weight, []
    with torch.no_grad():
        for _ in range(m):
            pt = torch.softmax(bb.model(inputs_embeds=embeds).logits[:, -1].float() / T, -1)  # [1, V]
            ps.append(pt)
            embeds = torch.cat([embeds, (pt @ E)[:, None]], 1)
    by_hand = torch.stack(ps, 1)  # [1, m, V]
    feed = {role: TextHandover(bb, bb, T) for role in system.roles}
    H = first_states_grad(system, q, bench.ANSWERS[:1], 1, m, feed, lambda s, d: TextHandover(bb, bb, T))[1]
    probe = feed["planner"].distribution(H)
    assert probe.shape == by_hand.shape
    # float32 rounding (KV cache here, full re-runs there) grows through the rollout and by 1/T: ~1e-3 on SmolLM2 at
    # T=0.1; a pre-norm state or the inner link's output instead of h is off by 0.1 or more
    assert (probe - by_hand).abs().max().item() < 5e-3
    (row,) = grad_probe(system, q, bench.ANSWERS[:1], [1], m, [T])
    ent = -(by_hand * by_hand.clamp_min(1e-30).log()).sum(-1).mean().item()
    assert row["text_entropy"] == pytest.approx(ent, abs=1e-2)
    assert row["text_max_prob"] == pytest.approx(by_hand.max(-1).values.mean().item(), abs=2e-3)


def test_part_5_alone_names_the_agents_it_ran_on(tmp_path, capsys):
    argv = ["--agents", "tiny-qwen", "--grad-agents", "tiny-llama,tiny-llama", "--skip", "e2e,rollout,train,step",
            "--questions", "1", "--rounds", "1", "--latent-steps", "2", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("== report")]
    res = json.load(open(tmp_path / "bench.json"))
    assert res["agents"] == res["grad_agents"] == "tiny-llama,tiny-llama"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # the atomic write left no temporary file
    assert len(header) == 1 and "tiny-llama,tiny-llama" in header[0] and "tiny-qwen" not in header[0], header

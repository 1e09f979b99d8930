"""Core parity and shape tests: model.py, links.py, agents.py on tiny random models of two architectures."""
import os
import subprocess
import sys

import pytest
import torch

import errors
from recursion import System, build_inputs, rollout, rollout_recompute
from checkpoints import load_links, save_links
from links import RecursiveLink, VARIANTS
from loading import load_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["tiny-llama", "tiny-qwen"]


@pytest.mark.parametrize("name", TINY)
def test_forward_from_embeddings_equals_plain_hf(name):
    bb = load_backbone(name)
    prompt = bb.prompt([{"role": "user", "content": "What is 12*7? Think briefly."}])
    ids = torch.tensor([bb.encode(prompt)])
    embeds, mask = build_inputs(bb, [prompt], {})  # no slots, no latents
    hidden, _ = bb.forward(embeds, mask)
    ours = bb.logits(hidden)
    ref = bb.model(input_ids=ids).logits
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_incremental_forward_with_cache_equals_full(name):
    bb = load_backbone(name)
    ids = torch.tensor([bb.encode("one two three four five six")])
    full, _ = bb.forward(bb.embed(ids), torch.ones_like(ids))
    head, cache = bb.forward(bb.embed(ids[:, :-3]), torch.ones_like(ids[:, :-3]))
    tail, _ = bb.forward(bb.embed(ids[:, -3:]), torch.ones_like(ids), cache)
    torch.testing.assert_close(torch.cat([head, tail], 1), full, rtol=0, atol=1e-5)


def _three_prompts(bb):
    qs = ["Hi.", "What is the capital of France, and why?", "Add 17 and 25, then double it."]
    return [bb.prompt([{"role": "user", "content": q}]) for q in qs]


@pytest.mark.parametrize("name", TINY)
def test_cached_rollout_equals_recompute_and_is_batch_invariant(name):
    system = System([name], variant="2layer_ln_res")
    bb, inner = system.backbones[0], system.inner["solver"]
    with torch.no_grad():
        for p in inner.parameters():  # a trained-looking link, not the identity-like init
            p.add_(0.02 * torch.randn_like(p))
        prompts = _three_prompts(bb)
        embeds, mask = build_inputs(bb, prompts, {})
        assert len(set(mask.sum(1).tolist())) == 3  # three lengths -> real left padding
        cached = rollout(bb, inner, embeds, mask, 6)
        recomputed = rollout_recompute(bb, inner, embeds, mask, 6)
        assert cached.shape == (3, 6, bb.hidden_size)
        torch.testing.assert_close(cached, recomputed, rtol=1e-4, atol=1e-4)
        for b, p in enumerate(prompts):  # each row equals the same prompt rolled out alone
            alone = rollout(bb, inner, *build_inputs(bb, [p], {}), 6)
            torch.testing.assert_close(cached[b:b + 1], alone, rtol=1e-4, atol=1e-4)


def test_heterogeneous_loop_shapes_at_every_hand_over():
    system = System(["tiny-llama", "tiny-qwen", "tiny-llama"])
    assert [bb.hidden_size for bb in system.backbones] == [64, 96, 64]
    assert system.backbones[0] is system.backbones[2]  # shared backbone: one copy
    seen = []
    for name, link in system.outer.items():
        link.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, inp[0].shape, out.shape)))
    B, m, rounds = 2, 5, 3
    recs = system.run(["What is 2+3?", "Name a colour."], "latent", rounds=rounds, latent_steps=m, max_new_tokens=4)
    expected = {"planner->critic": (64, 96), "critic->solver": (96, 64), "solver->planner": (64, 64)}
    # every round: planner->critic, critic->solver; every round but the last: solver->planner feedback
    assert [s[0] for s in seen] == ["planner->critic", "critic->solver", "solver->planner"] * (rounds - 1) + \
        ["planner->critic", "critic->solver"]
    for name, shape_in, shape_out in seen:
        d_in, d_out = expected[name]
        assert tuple(shape_in) == (B, m, d_in) and tuple(shape_out) == (B, m, d_out)
    assert len(recs) == B and all(r["latent_steps"] == m * (rounds * 3 - 1) for r in recs)
    assert all(r["tokens"] == {"solver": 4} for r in recs)


def test_text_mode_passes_text_and_counts_every_agent():
    system = System(["tiny-llama", "tiny-qwen"])
    rec = system.run(["Hi?"], "text", rounds=2, latent_steps=0, max_new_tokens=3)[0]
    assert rec["tokens"] == {"planner": 6, "solver": 6} and rec["latent_steps"] == 0


def test_latents_are_spliced_into_the_final_agents_input():
    """The solver's input is [prefix, outer(planner's m thoughts), suffix]; with m=0 just [prefix, suffix]."""
    system = System(["tiny-llama", "tiny-qwen"])
    with torch.no_grad():
        (e0, m0), = system.latent_pass(["Hi?"], 1, 0)
        (e3, m3), = system.latent_pass(["Hi?"], 1, 3)
        planner = system.backbones[0]
        thoughts = rollout(planner, system.inner["planner"], *build_inputs(planner, [system.prompt(0, "Hi?", 0)], {}), 3)
        sent = system.outer["planner->solver"](thoughts)  # [1, 3, 96]
    P = len(system.backbones[1].split_slots(system.prompt(1, "Hi?", 0))[0])  # tokens before the slot
    assert e3.shape[1] == e0.shape[1] + 3 and m3.sum() == m0.sum() + 3
    torch.testing.assert_close(e3[:, P:P + 3], sent)
    torch.testing.assert_close(torch.cat([e3[:, :P], e3[:, P + 3:]], 1), e0)


# ---- links -------------------------------------------------------------------------------------------------

def test_inner_link_parameter_count_matches_paper():
    # docs/method.md: one LayerNorm inner link at d=2560 is 13,122,560 parameters (the paper's "13.12M")
    assert RecursiveLink(2560, 2560, "inner", "2layer_ln_res").num_params() == 13_122_560


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind,d_in,d_out", [("inner", 64, 64), ("outer", 64, 64), ("outer", 64, 96)])
def test_link_variants_shapes_and_identity_like_start(variant, kind, d_in, d_out):
    link = RecursiveLink(d_in, d_out, kind, variant, out_rms=0.5)
    x = torch.randn(2, 5, d_in, dtype=torch.float64)
    y = link(x)
    assert y.shape == (2, 5, d_out) and y.dtype == x.dtype
    if d_in == d_out and variant != "2layer":  # residual branches start at zero, 1layer at the identity
        ln = torch.nn.functional.layer_norm
        want = 0.5 * (ln(x.float(), (d_in,)).double() if variant == "2layer_ln_res" else x)
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_link_checkpoint_round_trips_bit_exactly(tmp_path):
    a = {"inner.x": RecursiveLink(64, 64, "inner"), "outer.x->y": RecursiveLink(64, 96, "outer")}
    for l in a.values():
        torch.nn.init.normal_(l.W1.weight)
    save_links(str(tmp_path / "ck"), a, {"agents": ["tiny-llama", "tiny-qwen"]})
    b = {"inner.x": RecursiveLink(64, 64, "inner"), "outer.x->y": RecursiveLink(64, 96, "outer")}
    load_links(str(tmp_path / "ck"), b)
    for k in a:
        for (n, p), (_, q) in zip(a[k].state_dict().items(), b[k].state_dict().items()):
            assert torch.equal(p, q), n
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # atomic writes leave no temp files


# ---- errors: exit code != 0, one line, no traceback ---------------------------------------------------------

def _cli(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "agents.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})), timeout=300)


@pytest.mark.parametrize("args,words", [
    (["--agents", "nosuch"], ["unknown model alias 'nosuch'", "hub id"]),
    (["--agents", "./no/such/folder"], ["not found"]),
    (["--agents", "some-org/some-model-not-here"], ["some-org/some-model-not-here", "--agents smollm"]),
    (["--agents", "tiny-llama", "--question", "  "], ["empty question"]),
    (["--agents", "some-org/model-a,other-org/model-b"], ["some-org/model-a", "other-org/model-b", "hf download"]),
])
def test_cli_errors_are_one_clear_line(args, words):
    r = _cli(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(w in last for w in words), r.stderr


def test_cli_wrong_size_checkpoint_names_both_sizes(tmp_path):
    System(["tiny-llama", "tiny-llama"]).save_links(str(tmp_path / "ck"))
    r = _cli("--agents", "tiny-qwen,tiny-qwen", "--links", str(tmp_path / "ck"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "64" in last and "96" in last, r.stderr


def test_checkpoint_for_other_agents_of_same_size_is_refused(tmp_path):
    import json
    from checkpoints import json_digest
    path = str(tmp_path / "ck")
    System(["tiny-llama", "tiny-llama"]).save_links(path)
    System(["tiny-llama", "tiny-llama"]).load_links(path)  # the matching system loads it
    info = json.load(open(path + ".json"))
    info["models"] = ["some-org/other-64", "some-org/other-64"]  # same sizes, other models
    info["json_sha256"] = json_digest(info)  # as such a checkpoint holds (an edit alone is refused: test_checkpoints)
    json.dump(info, open(path + ".json", "w"))
    with pytest.raises(errors.UserError, match="trained for agents"):
        System(["tiny-llama", "tiny-llama"]).load_links(path)


@pytest.mark.parametrize("name", TINY)
def test_position_ids_under_left_padding_start_at_zero(name):
    """RoPE hides a constant position shift, so check the ids themselves: each row's first real token is position 0,
    also after the KV-cached steps."""
    bb = load_backbone(name)
    embeds, mask = build_inputs(bb, _three_prompts(bb), {})
    seen = []
    hook = bb.model.model.rotary_emb.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs.get("position_ids", args[-1]).clone()),
        with_kwargs=True)
    try:
        _, cache = bb.forward(embeds, mask)
        mask2 = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        bb.forward(embeds[:, -1:], mask2, cache)
    finally:
        hook.remove()
    lengths = mask.sum(1)
    for b in range(3):
        real = seen[0][b][mask[b].bool()]
        assert real.tolist() == list(range(int(lengths[b])))
        assert seen[1][b, 0].item() == lengths[b].item()  # the next step continues the row's own count


BAD_INPUT = {  # CLI -> [(arguments, a word the one-line error must contain)]
    "agents": [(["--max-new-tokens", "0"], "--max-new-tokens"), (["--max-new-tokens", "10000000"], "--max-new-tokens"),
               (["--question", "caf\udce9"], "UTF-8"), (["--top-p", "0"], "--top-p"), (["--top-p", "1.5"], "--top-p"),
               (["--temperature", "nan"], "--temperature"), (["--temperature", "-1"], "--temperature"),
               (["--device", "tpu"], "--device"), (["--search-docs", "/no/such.jsonl"], "--search-docs"),
               (["--rounds", "0"], "--rounds"), (["--latent-steps", "-12"], "--latent-steps"),
               (["--pattern", "ring"], "--pattern"), (["--link-variant", "3layer"], "--link-variant"),
               (["--fast", "turbo"], "--fast")],
    "train_outer": [(["--steps", "0"], "--steps"), (["--batch-size", "0"], "--batch-size"), (["--lr", "nan"], "--lr"),
                    (["--ckpt-every", "0"], "--ckpt-every"), (["--log-every", "0"], "--log-every"),
                    (["--rounds", "0"], "--rounds"), (["--latent-steps", "-1"], "--latent-steps"),
                    (["--data", "/no/such.jsonl", "--agents", "tiny-llama"], "not found"),
                    (["--data", "/", "--agents", "tiny-llama"], "folder")],
    "train_inner": [(["--steps", "-3"], "--steps"), (["--max-target-tokens", "0"], "--max-target-tokens"),
                    (["--warmup", "-1"], "--warmup")],
    "train_single": [(["--method", "qlora"], "--method"), (["--lora-r", "0"], "--lora-r")],
}


@pytest.mark.parametrize("cli,args,word", [(c, a, w) for c, cases in BAD_INPUT.items() for a, w in cases])
def test_every_cli_refuses_bad_input_in_one_line(cli, args, word, tmp_path, capsys):
    """Checked when the arguments are parsed (or before any model loads): exit 2, one line on stderr, no traceback."""
    import importlib
    main = importlib.import_module(cli).main
    try:
        code = main([*args, "--out", str(tmp_path / "out")] if cli.startswith("train") else args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and word in err, err


@pytest.mark.parametrize("content,word", [(b"", "empty"), (b"\xff\xfe\x00binary", "UTF-8"), (b"[]", "non-empty"),
                                          (b'{"rows": []}', "non-empty")])
def test_bad_data_files_are_one_line_errors(content, word, tmp_path, capsys):
    import train_outer
    f = tmp_path / "rows.json"
    f.write_bytes(content)
    code = train_outer.main(["--agents", "tiny-llama", "--data", str(f), "--out", str(tmp_path / "out"),
                             "--eval-questions", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines()[-1].startswith("error: ") and word in err.splitlines()[-1], err

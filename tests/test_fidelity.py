"""Fidelity: the losses are aligned as the HF model's own, a batch answers like its rows alone, the baselines never
touch the links, training rolls out exactly as inference does, and the schedule is the one documented."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F

import losses
import patterns
import trainer
from loading import load_backbone
from recursion import System

ARCHS = ["tiny-llama", "tiny-qwen", "tiny-gemma3"]
ROWS = [{"question": q, "plan": f"Add or subtract: {q}", "refined_plan": f"Compute {q}", "answer": a}
        for q, a in [("2+2?", "\\boxed{4}"), ("3+5?", "\\boxed{8}"), ("9-7?", "\\boxed{2}"), ("1+5?", "\\boxed{6}")]]


def _args(**kw):
    return argparse.Namespace(**dict(dict(rounds=2, latent_steps=3, latents="rollout", supervise="final",
                                          max_target_tokens=64, teacher_tokens=80, grad_ckpt=False), **kw))


# ---- loss alignment ---------------------------------------------------------------------------------------------

def _hf_loss(bb, prompt_ids, answer_ids):
    """The HF model's own loss on [prompt | answer]: labels -100 on the prompt (HF shifts them itself)."""
    ids = torch.tensor([p + a for p, a in zip(prompt_ids, answer_ids)])
    labels = torch.tensor([[-100] * len(p) + a for p, a in zip(prompt_ids, answer_ids)])
    return bb.model(input_ids=ids, labels=labels).loss


@pytest.mark.parametrize("name", ARCHS)
def test_answer_ce_equals_the_hf_models_own_loss(name):
    bb = load_backbone(name)
    prompt = bb.encode("Question: what is 2+2?\nAnswer:")
    answer = " The answer is \\boxed{4}."
    embeds = bb.embed(torch.tensor([prompt]))
    mask = torch.ones(1, len(prompt), dtype=torch.long)
    full = bb.encode(answer) + [bb.tokenizer.eos_token_id]  # a whole target: its end token is learned
    ours = losses.answer_ce(bb, embeds, mask, [answer], max_tokens=64)
    assert torch.allclose(ours, _hf_loss(bb, [prompt], [full]), atol=1e-5)
    # a cut target: only its first 5 tokens, and no end token (the model must not learn to stop there)
    cut = losses.answer_ce(bb, embeds, mask, [answer], max_tokens=5)
    assert torch.allclose(cut, _hf_loss(bb, [prompt], [bb.encode(answer)[:5]]), atol=1e-5)


def test_cut_targets_mask_their_end_and_whole_ones_learn_it():
    bb = load_backbone("tiny-llama")
    embeds, mask = bb.embed(torch.tensor([[5, 6], [5, 6]])), torch.ones(2, 2, dtype=torch.long)
    _, _, ids, tmask = losses.append_targets(bb, embeds, mask, ["abcdef", "ab"], max_tokens=4)
    eos = bb.tokenizer.eos_token_id
    assert ids[0].tolist() == bb.encode("abcd") and tmask[0].tolist() == [1, 1, 1, 1]
    assert ids[1, :3].tolist() == bb.encode("ab") + [eos] and tmask[1].tolist() == [1, 1, 1, 0]


def test_inner_loss_targets_the_embedding_of_the_next_token():
    system = System(["tiny-qwen"])
    with torch.no_grad():  # a non-trivial inner link, so position errors show
        for p in system.inner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = ROWS[:1]
    bb, role = system.backbones[0], system.roles[0]
    got = losses.inner_loss(system, rows, max_tokens=64)
    prompt = [t for t in bb.split_slots(system.prompt(0, rows[0]["question"], 0)) if not isinstance(t, str)]
    prompt = sum(prompt, [])
    target = bb.encode(rows[0]["answer"]) + [bb.tokenizer.eos_token_id]
    ids = torch.tensor([prompt + target])
    hidden = bb.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]  # HF's last (normed) states
    T, L = len(prompt), len(target)
    pred = system.inner[role](hidden[:, T - 1:T - 1 + L])                   # R_in(h_t) for t = T-1 .. T+L-2
    want = 1 - F.cosine_similarity(pred, bb.embed(ids[:, T:T + L]), dim=-1).mean()  # Emb(x_{t+1})
    assert torch.allclose(got, want, atol=1e-5)


# ---- batches, baselines, counting ---------------------------------------------------------------------------------

QUESTIONS = ["What is 2+3?", "Name a colour that is not red, please.", "Why?"]


@pytest.mark.parametrize("mode", ["latent", "text", "single"])
def test_every_row_of_a_batch_answers_as_it_does_alone(mode, monkeypatch):
    system = System(["tiny-llama", "tiny-qwen"])
    inputs = []  # what the final agent reads before it writes (per call: [B, T, d] and mask)
    answer = system.answer
    monkeypatch.setattr(system, "answer", lambda i, e, m, *rest: inputs.append((e, m)) or answer(i, e, m, *rest))
    batch = system.run(QUESTIONS, mode, rounds=2, latent_steps=3, max_new_tokens=6)
    batch_inputs = inputs[-1]
    for b, q in enumerate(QUESTIONS):
        alone = system.run([q], mode, rounds=2, latent_steps=3, max_new_tokens=6)[0]
        e, m = inputs[-1]
        be, bm = batch_inputs
        row = be[b, bm[b].bool()]
        assert row.shape == e[0].shape and torch.allclose(row, e[0], atol=1e-5), f"row {b} reads other inputs"
        assert alone["text"] == batch[b]["text"] and alone["tokens"] == batch[b]["tokens"]


@pytest.mark.parametrize("mode", ["text", "single"])
def test_baselines_never_touch_the_links(mode):
    system = System(["tiny-llama", "tiny-qwen"])
    before = system.run(QUESTIONS[:2], mode, rounds=2, latent_steps=3, max_new_tokens=8)
    with torch.no_grad():
        for p in system.parameters():
            p.fill_(float("nan"))
    after = system.run(QUESTIONS[:2], mode, rounds=2, latent_steps=3, max_new_tokens=8)
    assert [r["text"] for r in after] == [r["text"] for r in before]
    assert [r["written"] for r in after] == [r["written"] for r in before]
    assert system.run(QUESTIONS[:1], "latent", rounds=1, latent_steps=2, max_new_tokens=2)  # (latent mode does read them)


def test_text_mode_agents_read_what_the_previous_agent_wrote(monkeypatch):
    system = System(["tiny-llama", "tiny-qwen"])
    seen = []
    prompt = system.prompt
    monkeypatch.setattr(system, "prompt", lambda i, q, r, texts=None, alone=False:
                        seen.append((i, r, prompt(i, q, r, texts, alone))) or seen[-1][2])
    rec = system.run(["What is 2+3?"], "text", rounds=2, latent_steps=3, max_new_tokens=8)[0]
    planner1, solver1, planner2, _ = rec["written"]
    prompts = {(i, r): p for i, r, p in seen}
    assert planner1 and planner1 in prompts[(1, 0)]       # the solver reads the planner's text, same round
    assert solver1 and solver1 in prompts[(0, 1)]         # the planner reads the solver's text as feedback
    assert planner2 in prompts[(1, 1)]                    # and in round 2, the planner's new text


def test_latent_steps_are_counted_where_they_are_made():
    system = System(["tiny-llama", "tiny-qwen", "tiny-llama"])
    calls = []
    for link in system.inner.values():
        link.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[1]))
    rec = system.run(["What is 2+3?"], "latent", rounds=2, latent_steps=4, max_new_tokens=2)[0]
    assert rec["latent_steps"] == sum(calls) == 20  # 5 rollouts of 4 steps: all agents twice, the solver once


def test_training_rolls_out_exactly_as_inference(monkeypatch):
    system = System(["tiny-llama", "tiny-qwen"])
    seen, ce, answer = {}, losses.answer_ce, system.answer

    def train_ce(bb, embeds, mask, *a, **k):  # the final agent's inputs in training
        seen["train"] = (embeds, mask)
        return ce(bb, embeds, mask, *a, **k)

    def infer_answer(i, embeds, mask, *rest):  # the final agent's inputs at inference
        seen["infer"] = (embeds, mask)
        return answer(i, embeds, mask, *rest)
    monkeypatch.setattr(losses, "answer_ce", train_ce)
    monkeypatch.setattr(system, "answer", infer_answer)
    loss = losses.outer_loss(system, ROWS[:2], _args(rounds=3, latent_steps=4))
    assert loss.requires_grad  # the training pass records gradients through the rollouts
    system.run([r["question"] for r in ROWS[:2]], "latent", rounds=3, latent_steps=4, max_new_tokens=2)
    (te, tm), (ie, im) = seen["train"], seen["infer"]
    assert torch.equal(tm, im) and torch.allclose(te.detach(), ie, atol=1e-6)


# ---- the schedule (a non-finite loss: test_training.py) -----------------------------------------------------------------------------------

def test_learning_rate_at_the_schedules_corners(tmp_path, monkeypatch):
    used = []

    class Recording(torch.optim.AdamW):
        def step(self, *a, **k):
            used.append(self.param_groups[0]["lr"])
            return super().step(*a, **k)
    monkeypatch.setattr(trainer.torch.optim, "AdamW", Recording)
    system = System(["tiny-llama"])
    args = argparse.Namespace(lr=1e-3, warmup=4, steps=12, resume=False, out=str(tmp_path), batch_size=1, seed=0,
                              log_every=100, ckpt_every=100, stage="outer")
    w = next(system.outer.parameters())
    trainer.train(system, system.outer.parameters(), lambda batch: (w ** 2).sum(), ROWS, args)
    assert len(used) == 12
    assert used[0] == pytest.approx(1e-3 / 4)        # step 0: the first warm-up step
    assert used[3] == pytest.approx(1e-3)            # warmup - 1: warm-up reaches the peak
    assert used[4] == pytest.approx(1e-3)            # warmup: cosine starts at the peak
    assert used[11] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))  # the last step, not yet 0
    assert all(a > b for a, b in zip(used[4:], used[5:]))


def test_the_paper_scaled_structure_builds_and_runs():
    """Sequential-Scaled loads gemma-3-4b-it and Qwen3.5 as vision-language classes (sizes in a text config, the
    decoder in .language_model): tiny models of those very classes must run the latent loop and the answer."""
    system = System(["tiny-gemma3", "tiny-llama", "tiny-qwen3.5"])
    assert [type(bb.model).__name__ for bb in system.backbones] == [
        "Gemma3ForConditionalGeneration", "LlamaForCausalLM", "Qwen3_5ForConditionalGeneration"]
    assert patterns.PRESETS["paper-scaled"] == ("sequential", "gemma,llama-3b,qwen3.5-4b")
    rec = system.run(["What is 2+2?", "Hi"], "latent", rounds=2, latent_steps=3, max_new_tokens=4)
    assert rec[0]["latent_steps"] == 15 and all(r["tokens"]["solver"] > 0 for r in rec)

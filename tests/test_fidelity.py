"""Fidelity: the losses are aligned as the HF model's own, a batch answers like its rows alone, the baselines never
touch the links, training rolls out exactly as inference does, and each agent reads what the others wrote."""
import pytest
import torch

import losses
import patterns
import scoring
from loading import load_backbone
from recursion import System
from helpers import ROWS, loss_args, scripted

ARCHS = ["tiny-llama", "tiny-qwen", "tiny-gemma3"]


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
    """NaN links: the baselines answer as before; the latent loop's final agent reads NaN."""
    system = System(["tiny-llama", "tiny-qwen"])
    before = system.run(QUESTIONS[:2], mode, rounds=2, latent_steps=3, max_new_tokens=8)
    with torch.no_grad():
        for p in system.parameters():
            p.fill_(float("nan"))
    after = system.run(QUESTIONS[:2], mode, rounds=2, latent_steps=3, max_new_tokens=8)
    assert [r["text"] for r in after] == [r["text"] for r in before]
    assert [r["written"] for r in after] == [r["written"] for r in before]
    (embeds, _), = system.latent_pass(QUESTIONS[:1], 1, 2)
    assert torch.isnan(embeds).any()  # latent mode does read them


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
    assert rec["tokens"] == {"planner": 16, "solver": 16} and rec["latent_steps"] == 0  # 8 new tokens a turn, 2 each


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
    loss = losses.outer_loss(system, ROWS[:2], loss_args(rounds=3, latent_steps=4))
    assert loss.requires_grad  # the training pass records gradients through the rollouts
    system.run([r["question"] for r in ROWS[:2]], "latent", rounds=3, latent_steps=4, max_new_tokens=2)
    (te, tm), (ie, im) = seen["train"], seen["infer"]
    assert torch.equal(tm, im) and torch.allclose(te.detach(), ie, atol=1e-6)


def test_the_paper_scaled_structure_builds_and_runs():
    """Sequential-Scaled loads gemma-3-4b-it and Qwen3.5 as vision-language classes (sizes in a text config, the
    decoder in .language_model): tiny models of those very classes must run the latent loop and the answer."""
    system = System(["tiny-gemma3", "tiny-llama", "tiny-qwen3.5"])
    assert [type(bb.model).__name__ for bb in system.backbones] == [
        "Gemma3ForConditionalGeneration", "LlamaForCausalLM", "Qwen3_5ForConditionalGeneration"]
    assert patterns.PRESETS["paper-scaled"] == ("sequential", "gemma,llama-3b,qwen3.5-4b")
    rec = system.run(["What is 2+2?", "Hi"], "latent", rounds=2, latent_steps=3, max_new_tokens=4)
    assert rec[0]["latent_steps"] == 15 and all(r["tokens"]["solver"] > 0 for r in rec)


@pytest.mark.sandbox
def test_deliberation_agents_read_the_reflectors_latents_and_what_the_tool_printed(monkeypatch):
    """The tool-caller (scripted) calls python, then answers: its text holds the call, the sandbox's output in
    <result>, and the answer after it; its second decode reads all of that after its prompt, and its prompt's slot
    holds the reflector's last latents as the outer link sent them."""
    system = System(["tiny-llama", "tiny-qwen"], "deliberation")  # reflector d = 64, tool-caller d = 96
    bb, q, sent = system.backbones[1], "What is 3 * (0 + 1 + ... + 9)?", []
    call, answer = "<python>print('Answer: 0')\nprint(3 * sum(range(10)))</python>", "It printed 135, so \\boxed{135}."
    calls = scripted(monkeypatch, bb, [call, answer])
    system.outer["reflector->toolcaller"].register_forward_hook(lambda mod, inp, out: sent.append(out))
    rec = system.run([q], "latent", rounds=2, latent_steps=3)[0]
    read = f"{call}\n<result>Answer: 0\n135</result>\n"  # what the sandboxed code printed
    assert rec["text"] == read + answer and rec["written"] == [rec["text"]] and rec["tokens"] == {"toolcaller": 14}
    assert rec["tool_calls"] == [dict(tool="python", input=call[8:-9], result="Answer: 0\n135")]
    assert scoring.extract_math(rec["text"]) == "135"  # the answer is read after the result, not in it
    assert len(calls) == 2 and len(sent) == 2 and sent[-1].shape == (1, 3, 96)  # one hand-over a round
    prompt = calls[0]["rows"][0]
    torch.testing.assert_close(calls[1]["rows"][0], torch.cat([prompt, bb.embed(torch.tensor(bb.encode(read)))]))
    before, slot, after = bb.split_slots(system.prompt(1, q, 1))
    assert slot == "from_reflector" and prompt.shape[0] == len(before) + 3 + len(after)
    torch.testing.assert_close(prompt[len(before):len(before) + 3], sent[-1][0])
    torch.testing.assert_close(prompt[:len(before)], bb.embed(torch.tensor(before)))

"""Stage 1 as the release trains it: each agent's prompt holds the upstream agents' gold role texts where the loop puts
their latents; mixture specialists learn from their own domain's rows; the deliberation reflector has the tool rules."""
import json

import pytest
import torch
import torch.nn.functional as F

import losses
import train_inner
from recursion import System
from model import slot
from patterns import TOOL_RULES
from helpers import perturb

ROW = {"question": "What is 13+25?", "plan": "PLAN: add the tens, then the ones.",
       "refined_plan": "REFINED: 10+20 = 30; 3+5 = 8; 30+8 = 38.", "answer": "It is \\boxed{38}.",
       "hie_math_expert": "MATH VIEW: 38.", "hie_code_expert": "CODE VIEW: print(13+25)",
       "hie_science_expert": "SCIENCE VIEW: a sum.", "domain": "math"}

# Which gold field the loop's latents stand for in each slot, written out by hand from the role targets table
# (docs/method.md §4): {agent index: {slot: field}}; agents not listed have no slot in round 1.
SLOTS = {
    ("sequential", 3): {1: {"from_planner": "plan"}, 2: {"from_critic": "refined_plan"}},
    ("mixture", 4): {3: {"from_math": "hie_math_expert", "from_code": "hie_code_expert",
                         "from_science": "hie_science_expert"}},
    ("distillation", 2): {1: {"from_expert": "refined_plan"}},
    ("deliberation", 2): {1: {"from_reflector": "refined_plan"}},
    ("debate", 3): {2: {"from_planner0": "plan", "from_planner1": "plan"}},
}


@pytest.mark.parametrize("pattern,n", list(SLOTS))
def test_each_agent_reads_the_upstream_gold_texts_exactly_at_its_slots(pattern, n):
    system = System(["tiny-llama"] * n, pattern)
    for i in range(n):
        want = system.prompt(i, ROW["question"], 0)  # the loop's round-1 prompt, slot markers where latents go
        for name, field in SLOTS[(pattern, n)].get(i, {}).items():
            assert want.count(slot(name)) == 1, (pattern, i, name)
            want = want.replace(slot(name), ROW[field])
        assert "<|slot:" not in want and losses.stage1_prompt(system, i, ROW) == want, (pattern, system.roles[i])
        own = train_inner.target_text(ROW, train_inner.role_targets(system.roles[i]))
        assert own not in want, (pattern, system.roles[i], "reads its own target: its link would learn to copy")


def test_the_loss_covers_the_target_tokens_only_as_computed_by_hand():
    """Two rows of different lengths (so the batch is left-padded); each agent's loss by hand: the HF model over
    [prompt with upstream text | target + end], the state before each target token against that token's embedding."""
    system = System(["tiny-llama", "tiny-qwen", "tiny-llama"])
    perturb(system.inner, 0.05)  # non-trivial inner links, so a shifted span shows
    rows = [ROW, dict(ROW, question="What is 2+2, written out in words and then in digits?", plan="PLAN: two and two.",
                      refined_plan="REFINED: 2+2 = 4.", answer="Four: \\boxed{4}.")]
    fields = {"planner": "plan", "critic": "refined_plan", "solver": "answer"}
    ups = {1: ("from_planner", "plan"), 2: ("from_critic", "refined_plan")}
    per_agent = []
    for i, (role, bb) in enumerate(zip(system.roles, system.backbones)):
        total, count = 0.0, 0
        for row in rows:
            text = system.prompt(i, row["question"], 0)
            if i in ups:
                text = text.replace(slot(ups[i][0]), row[ups[i][1]])
            prompt, target = bb.encode(text), bb.encode(row[fields[role]]) + [bb.tokenizer.eos_token_id]
            ids = torch.tensor([prompt + target])
            with torch.no_grad():
                hidden = bb.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            T, L = len(prompt), len(target)
            pred = system.inner[role](hidden[:, T - 1:T - 1 + L])  # the states before each target token
            total = total + (1 - F.cosine_similarity(pred, bb.embed(ids[:, T:T + L]), dim=-1)).sum()
            count += L
        per_agent.append(total / count)
    want = sum(per_agent) / len(per_agent)
    got = losses.inner_loss(system, rows, max_tokens=64)
    assert torch.allclose(got, want, atol=1e-5), (got.item(), want.item())


MIXED = [dict(ROW, question=f"{d} question {k}", domain=d) for d in ("math", "code", "science", "math") for k in (1, 2)]


def test_each_mixture_specialist_learns_from_its_own_domain_and_the_summarizer_from_all(monkeypatch):
    system = System(["tiny-llama"] * 4, "mixture")
    seen = {role: [] for role in system.roles}
    prompt = losses.stage1_prompt
    monkeypatch.setattr(losses, "stage1_prompt",
                        lambda s, i, row: seen[s.roles[i]].append(row["question"]) or prompt(s, i, row))
    with torch.no_grad():
        losses.inner_loss(system, MIXED, max_tokens=8)
    assert seen["math"] == [r["question"] for r in MIXED if r["domain"] == "math"]
    assert seen["code"] == ["code question 1", "code question 2"]
    assert seen["science"] == ["science question 1", "science question 2"]
    assert seen["summarizer"] == [r["question"] for r in MIXED]


def test_a_specialist_without_rows_is_a_one_line_error_before_any_model_loads(tmp_path, monkeypatch, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in MIXED if r["domain"] != "science"))
    monkeypatch.setattr(train_inner, "system_from_args", lambda a: pytest.fail("models loaded before the rows"))
    code = train_inner.main(["--agents", "tiny-llama,tiny-llama,tiny-llama,tiny-llama", "--pattern", "mixture",
                             "--data", str(data), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and "domain 'science'" in err and str(data) in err


def test_the_reflector_has_the_tool_rules_in_its_system_prompt():
    system = System(["tiny-llama", "tiny-llama"], "deliberation")
    reflector, toolcaller = (system.prompt(i, "What is 2**20?", 0) for i in (0, 1))
    for rendered in (reflector, toolcaller):
        assert TOOL_RULES in rendered
        assert all(tag in rendered for tag in ("<python>", "</python>", "<search>", "<result>"))
    system_part = reflector[:reflector.index("What is 2**20?")]  # the rules come before the user message
    assert TOOL_RULES in system_part and "at most 5 calls" in system_part
    assert "You are a helpful assistant." not in reflector

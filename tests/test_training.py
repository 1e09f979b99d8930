"""Training: resume is exact, gradient checkpointing changes nothing, two ranks train as one process, rows are checked
and derived honestly (the loss falls: test_patterns.py; gradients reach the links: test_patterns.py, test_course.py)."""
import json
import subprocess
import sys

import pytest
import torch

import losses
import checkpoints
import train_outer
from recursion import System
from errors import UserError
from conftest import kill_and_resume
from helpers import ROOT, ROWS, loss_args
from rows import DataError, load_rows


def _train_tiny(tmp_path, steps, **kw):
    return ["--agents", "tiny-llama,tiny-qwen", "--steps", str(steps), "--out", str(tmp_path), "--eval-questions", "0",
            "--rounds", "2", "--latent-steps", "4", "--log-every", "1000",
            *(x for k, v in kw.items() for x in (f"--{k}", str(v)))]


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    def cmd(out, *extra):
        return [sys.executable, "train_outer.py", *_train_tiny(out, 12, **{"ckpt-every": 4, "batch-size": 1}), *extra]
    kill_and_resume(cmd, tmp_path, ROOT, "links.safetensors")


def test_malformed_rows_are_reported_with_their_line(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"question": "q", "plan": "p", "refined_plan": "r", "answer": "a"}\n'
                 '{"question": "q", "plan": "p", "answer": "a"}\n')
    with pytest.raises(DataError, match=r"line 2: missing or empty field\(s\) refined_plan"):
        load_rows(str(f), targets=[("plan",), ("refined_plan",), ("answer",)])
    f.write_text('{"question": "q", "plan": "p", "refined_plan": "r", "answer": "a"}\n{not json\n')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        load_rows(str(f))


def test_gsm8k_rows_are_derived_honestly():
    rows = load_rows("gsm8k", "train")
    assert len(rows) == 7473
    r = rows[0]  # "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips ..."
    assert r["plan"] == ("Step 1: Natalia sold 48/2 = ? clips in May.\n"
                         "Step 2: Natalia sold 48+24 = ? clips altogether in April and May.")
    assert r["refined_plan"] == ("Step 1: Natalia sold 48/2 = 24 clips in May.\n"
                                 "Step 2: Natalia sold 48+24 = 72 clips altogether in April and May.")
    assert r["answer"] == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April "
                           "and May.\nThe final answer is \\boxed{72}.")
    assert not any("<<" in x["plan"] + x["refined_plan"] + x["answer"] for x in rows)
    assert sum(x["plan"] != x["refined_plan"] for x in rows) / len(rows) > 0.97  # planner and critic learn apart


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(monkeypatch):
    import transformers.modeling_utils as mu  # where transformers looks up torch's checkpoint function
    used, real = [], mu.checkpoint
    monkeypatch.setattr(mu, "checkpoint", lambda *a, **k: used.append(1) or real(*a, **k))
    system = System(["tiny-llama", "tiny-qwen"])
    system.inner.requires_grad_(False)
    results = []
    for ck in (False, True):
        system.zero_grad(set_to_none=True)
        loss = losses.outer_loss(system, ROWS[:2], loss_args(grad_ckpt=ck))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in system.outer.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert len(used) == 2  # both decoder layers of tiny-qwen were checkpointed, in the second pass only
    assert not system.backbones[-1].model.model.training  # back in eval mode afterwards


def test_torchrun_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    """torch.distributed over gloo on the CPU: two ranks split each batch and average their gradients, which must give
    the links one process gets from the whole batch (rows of equal token length, so a mean of per-rank means is the
    mean over the batch)."""
    from safetensors.torch import load_file
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    # a small lr: Adam divides by sqrt(v), so a last-bit difference in a near-zero gradient (one batch of 2 vs two of
    # 1) becomes a difference of up to ~lr in that weight; at 1e-5 that stays under 1e-6 while every step moves ~1e-5
    common = ["--data", str(data), "--device", "cpu", "--lr", "1e-5", "--warmup", "1"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "train_outer.py",
                          *_train_tiny(tmp_path / "two", 3, **{"batch-size": 1, "log-every": 1}), *common],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "batch 1 x 2 rank(s)" in two.stdout and "step     3/3" in two.stdout
    assert (tmp_path / "two" / "latest").read_text() == "step-000003"
    one = subprocess.run([sys.executable, "train_outer.py", *_train_tiny(tmp_path / "one", 3, **{"batch-size": 2}),
                          *common], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = load_file(tmp_path / "two" / "links.safetensors"), load_file(tmp_path / "one" / "links.safetensors")
    start = checkpoints.links_of(System(["tiny-llama", "tiny-qwen"]))
    moved = 0.0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
        link, name = k.split(".", 2)[:2], k.split(".", 2)[2]
        moved = max(moved, (a[k] - dict(start[".".join(link)].state_dict())[name].float()).abs().max().item())
    assert moved > 1e-5  # training moved the links by more than the tolerance, so the equality says something


def test_the_secret_task_hides_the_word_from_the_last_agent_and_reads_back_its_boxed_answer():
    from rows import SECRET_WORDS, secret_rows
    system = System(["tiny-llama", "tiny-llama"])
    train, held = secret_rows(), secret_rows(held_out=True)
    assert {r["question"][0] for r in train}.isdisjoint(r["question"][0] for r in held)
    for r in train + held:
        first, last = system.prompt(0, r["question"], 0), system.prompt(1, r["question"], 0)
        assert r["final"] in first and not any(w in last.lower() for w in SECRET_WORDS)  # only latents can carry it
        assert r["answer"] == f"\\boxed{{{r['final']}}}" and "\\boxed{}" in last  # the target is what it is asked
        assert train_outer.final_answer(r["answer"], secret=True) == r["final"]
        assert train_outer.final_answer(r["answer"][:-1] + " and more", secret=True) == r["final"]  # cut at "}"

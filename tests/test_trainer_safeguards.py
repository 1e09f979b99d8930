"""trainer.py's safeguards against numbers worked out by hand: a non-finite loss or weights stop the run, gradient
clipping, AdamW's settings, warm-up + cosine, the figures a run prints, a resume restores the optimizer, the schedule,
the batches and the random state, each rank takes its slice of a batch and torchrun averages the gradients, a cut
target gets no end token and the budget of targets. scripts/planted_errors.py plants an error in each of them (in
trainer.py, losses.py, checkpoints.py, protocol.py) and checks that these tests catch it."""
import functools
import json
import os
import random
import re
import socket
import subprocess
import sys
import types

import pytest
import torch

import losses
import trainer
from checkpoints import load_tensors, save_tensors
from helpers import ROOT, run_args


class Weights:
    """What train() saves and restores: a list of parameters, as OUT/links.safetensors + .json."""
    name, label = "links", "link"

    def __init__(self, params):
        self.params = params

    def save(self, path, extra):  # the writer the real runs use: checksummed, so --resume accepts it; refuses NaN
        save_tensors(path, {f"p{i}": p for i, p in enumerate(self.params)}, extra)

    def load(self, path):
        from safetensors.torch import load_file
        t = load_file(path + ".safetensors")
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(t[f"p{i}"])


SYSTEM = types.SimpleNamespace(backbones=[types.SimpleNamespace(num_params=lambda: 1000, device=torch.device("cpu"))])
ROWS = [{"question": f"q{i}"} for i in range(5)]


_args = functools.partial(run_args, lr=0.1, steps=1, ckpt_every=100)


def _train(params, loss_fn, args):
    return trainer.train(SYSTEM, params, loss_fn, ROWS, args, Weights(params))


def _state(out, step):
    return torch.load(os.path.join(out, f"step-{step:06d}", "state.pt"), weights_only=True)


@pytest.mark.parametrize("c,g", [(3.0, 0.5), (0.1, 0.1)])
def test_gradient_clipping_at_1_bounds_the_gradient_adam_sees(tmp_path, c, g):
    """loss = c · sum(w), w = four ones: the gradient is c in each element, norm 2c.
    c = 3: norm 6 > 1, clipped to norm 1.0: 0.5 each. c = 0.1: norm 0.2 <= 1, left as it is: 0.1 each.
    AdamW(0.9, 0.95) after one step: exp_avg = 0.1 g, exp_avg_sq = 0.05 g²; with bias correction the step is
    lr · g / |g| = lr = 0.1 (warm-up 1: the first step's lr factor is (0 + 1) / 1), and weight decay 0 leaves nothing
    else: w = 1 - 0.1 = 0.9 (decay 0.01 would give 0.999 - 0.1 = 0.899)."""
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    _train([w], lambda batch: c * w.sum(), _args(tmp_path))
    assert w.grad.norm().item() == pytest.approx(2 * g, rel=1e-5)  # the clipped gradient: norm 1.0 or 0.2
    assert w.grad.tolist() == pytest.approx([g] * 4, rel=1e-5)
    adam = _state(tmp_path, 1)["optimizer"]["state"][0]
    assert adam["exp_avg"].tolist() == pytest.approx([0.1 * g] * 4, rel=1e-5)
    assert adam["exp_avg_sq"].tolist() == pytest.approx([0.05 * g * g] * 4, rel=1e-5)
    assert w.tolist() == pytest.approx([0.9] * 4, abs=1e-6)


def test_warmup_cosine_factors_equal_the_formula_by_hand():
    """warm-up 4, 12 steps: steps 0..3 get (s + 1) / 4; then 0.5 (1 + cos(pi (s - 4) / 8)), held at 0 past the end:
    s = 4: 1; s = 6: 0.5 (1 + cos(pi/4)) = 0.853553; s = 8: 0.5 (1 + cos(pi/2)) = 0.5; s = 10: 0.5 (1 + cos(3pi/4))
    = 0.146447; s = 12: 0.5 (1 + cos(pi)) = 0; s = 15: still 0 (cos(pi · 11/8) would give 0.308658)."""
    f = trainer.lr_lambda(4, 12)
    got = [f(s) for s in (0, 1, 2, 3, 4, 6, 8, 10, 12, 15)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0], abs=1e-6)
    assert trainer.lr_lambda(0, 4)(0) == 1.0  # no warm-up: the cosine from the first step


@pytest.fixture()
def spy(monkeypatch):
    """The AdamW optimizers train() makes, in order."""
    made, real = [], torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    return made


def test_the_learning_rate_each_step_uses_is_the_schedule_by_hand(tmp_path, spy):
    """lr 0.1, warm-up 2, 6 steps: factors (0+1)/2, (1+1)/2, then 0.5 (1 + cos(pi (s - 2) / 4)) for s = 2..5:
    lrs 0.05, 0.1, 0.1, 0.0853553, 0.05, 0.0146447 (a schedule one step late would start 0.1, ... or 0, ...).
    Read two ways: the optimizer's lr when the step's loss is computed, and the move of w: a constant gradient 0.5
    (unclipped) gives Adam's step lr · m̂ / sqrt(v̂) = lr exactly, so w falls by the lr at every step."""
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    seen = []

    def loss_fn(batch):
        seen.append((spy[-1].param_groups[0]["lr"], w.item()))
        return 0.5 * w.sum()
    _train([w], loss_fn, _args(tmp_path, warmup=2, steps=6))
    want = [0.05, 0.1, 0.1, 0.0853553, 0.05, 0.0146447]
    assert [lr for lr, _ in seen] == pytest.approx(want, abs=1e-7)
    ws = [x for _, x in seen] + [w.item()]
    assert [a - b for a, b in zip(ws, ws[1:])] == pytest.approx(want, abs=1e-7)


def test_training_summary_and_progress_lines_print_the_figures_by_hand(tmp_path, capsys):
    """8 steps with losses 8, 7, ..., 1: k = max(1, min(5, 8 // 4)) = 2, first two 7.5000, last two 1.5000. 4 trained
    weights of 1,000 frozen: 0.40% / 0.400%. A progress line shows the lr its step trained with (lr 0.1, warm-up 2,
    8 steps): step 1 (index 0) 0.1 · 1/2 = 5.00e-02; step 4 (index 3) 0.1 · 0.5 (1 + cos(pi · 1/6)) = 0.1 · 0.933013
    = 9.33e-02; step 8 (index 7) 0.1 · 0.5 (1 + cos(pi · 5/6)) = 0.1 · 0.066987 = 6.70e-03 (the next step's lr
    would read 1.00e-01, 7.50e-02 and 0.00e+00)."""
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    losses = iter([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    got = _train([w], lambda batch: 0 * w.sum() + next(losses), _args(tmp_path, warmup=2, steps=8, log_every=4))
    assert got == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    out = capsys.readouterr().out
    assert "training 4 link parameters (0.40% of 1,000 frozen)" in out
    assert re.search(r"loss \(first -> last, mean of 2\) +7\.5000 -> 1\.5000\n", out)
    assert re.search(r"trainable parameters +4 \(0\.400% of frozen\)\n", out)
    assert "step     1/8  loss 8.0000  lr 5.00e-02" in out
    assert "step     4/8  loss 5.0000  lr 9.33e-02" in out
    assert "step     8/8  loss 1.0000  lr 6.70e-03" in out


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_stops_before_it_touches_the_weights(tmp_path, capsys, bad):
    """Steps 1 and 2 train (checkpoints step-1, step-2); step 3's loss is non-finite: exit 3 with a message naming
    the value and the step, no backward or update with it (the weights stay as step 2 left them)."""
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    snap = []

    def loss_fn(batch):
        snap.append(w.detach().clone())
        return 0.5 * w.sum() if len(snap) < 3 else 0 * w.sum() + bad
    with pytest.raises(SystemExit) as e:
        _train([w], loss_fn, _args(tmp_path, steps=5, ckpt_every=1))
    assert e.value.code == 3 and len(snap) == 3
    out = capsys.readouterr().out
    assert f"error: loss is {bad} at step 3; stopping" in out and "--resume" in out
    assert torch.equal(w.detach(), snap[2]) and torch.isfinite(w).all()
    assert (tmp_path / "latest").read_text() == "step-000002"


def test_non_finite_weights_stop_the_run_and_the_last_good_checkpoint_stays(tmp_path, capsys):
    """Step 3's loss is finite but leaves w = NaN: the checkpoint writer (checkpoints.save_tensors) refuses it, and the run
    stops with exit 3 naming step 3; OUT/latest still names step 2, whose weights are the finite ones."""
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    calls = []

    def loss_fn(batch):
        calls.append(1)
        if len(calls) == 3:  # a finite loss that reaches no weight, after the weights went NaN
            with torch.no_grad():
                w.fill_(float("nan"))
            return torch.tensor(1.0, requires_grad=True)
        return 0.5 * w.sum()
    with pytest.raises(SystemExit) as e:
        _train([w], loss_fn, _args(tmp_path, steps=5, ckpt_every=1))
    assert e.value.code == 3 and len(calls) == 3
    out = capsys.readouterr().out
    assert "not finite (step 3); stopping" in out and "last good checkpoint" in out
    assert (tmp_path / "latest").read_text() == "step-000002"
    tensors, _ = load_tensors(str(tmp_path / "links"))
    assert torch.isfinite(tensors["p0"]).all()


def test_resume_restores_the_schedule_the_optimizer_the_batches_and_the_random_state(tmp_path, spy):
    """6 steps, lr 0.1, warm-up 2, seed 7, a checkpoint every 3 steps. The gradient changes each step (0.2 + 0.3 u,
    u a torch draw), so Adam's moments matter. Killed during step 4, resumed: steps 4-6 (indices 3..5) must see
    lr 0.1 · 0.853553, 0.05, 0.0146447 (not the warm-up's 0.05 of a fresh schedule), the draw of
    torch.manual_seed(7 · 1_000_003 + step), the batch random.Random(7 · 1_000_003 + step) picks, and end with the
    weights of the uninterrupted run."""
    def run(out, kill_at=None, resume=False):
        w = torch.nn.Parameter(torch.full((1,), 5.0 if resume else 0.0, dtype=torch.float64))  # resume loads w
        seen = []

        def loss_fn(batch):
            if kill_at is not None and len(seen) == kill_at:
                raise KeyboardInterrupt
            u = torch.rand(()).item()
            seen.append((spy[-1].param_groups[0]["lr"], u, batch[0]["question"], w.item()))
            return (0.2 + 0.3 * u) * w.sum()
        torch.manual_seed(123)  # the same global state at both starts: only the reseeding makes the draws agree
        losses = _train([w], loss_fn, _args(out, warmup=2, steps=6, seed=7, ckpt_every=3, resume=resume))
        return seen, w.item(), losses

    whole, w_whole, losses_whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", kill_at=3)
    assert (tmp_path / "cut" / "latest").read_text() == "step-000003"
    resumed, w_resumed, losses_resumed = run(tmp_path / "cut", resume=True)
    assert len(resumed) == 3
    assert [lr for lr, *_ in resumed] == pytest.approx([0.0853553, 0.05, 0.0146447], abs=1e-7)
    draws = [torch.rand((), generator=torch.Generator().manual_seed(7 * 1_000_003 + s)).item() for s in (3, 4, 5)]
    assert [u for _, u, *_ in resumed] == draws
    picks = [ROWS[random.Random(7 * 1_000_003 + s).randrange(len(ROWS))]["question"] for s in (3, 4, 5)]
    assert [q for _, _, q, _ in resumed] == picks
    assert resumed == whole[3:]  # same lrs, draws, batches and weights at every step
    assert w_resumed == w_whole and losses_resumed == losses_whole


def test_each_rank_takes_its_own_slice_of_one_global_batch():
    # world 2, 3 rows a rank: together the ranks take the 6 rows one process picks with batch 6 (each row once)
    rows = [dict(i=i) for i in range(10)]
    whole = [r["i"] for r in trainer.batch_for(rows, 4, 6, 1)]
    r0, r1 = ([r["i"] for r in trainer.batch_for(rows, 4, 3, 1, rank, 2)] for rank in (0, 1))
    assert sorted(r0 + r1) == sorted(whole) and len(r0) == len(r1) == 3
    assert [r["i"] for r in trainer.batch_for(rows, 4, 6, 1)] == whole  # a pure function of (seed, step)
    assert [r["i"] for r in trainer.batch_for(rows, 5, 6, 1)] != whole  # another step, another batch


RANK_SCRIPT = r"""
import argparse, json, os, sys, types
import torch
sys.path.insert(0, os.environ["ROOT"])
import trainer
from safetensors.torch import save_file
rank = int(os.environ["RANK"])
w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
v = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
class Weights:
    name, label = "links", "link"
    def save(self, path, extra):
        save_file({"w": w.detach().clone(), "v": v.detach().clone()}, path + ".safetensors")
        open(path + ".json", "w").write("{}")
def loss_fn(batch):  # rank 0: 0.1 w + 0.4 v; rank 1: 0.2 w (no gradient reaches v on rank 1)
    return 0.1 * (rank + 1) * w.sum() + (0.4 * v.sum() if rank == 0 else 0)
system = types.SimpleNamespace(backbones=[types.SimpleNamespace(num_params=lambda: 1000, device=torch.device("cpu"))])
args = argparse.Namespace(lr=0.1, warmup=1, steps=1, resume=False, overwrite=False, out=sys.argv[1], batch_size=1,
                          seed=0, log_every=100, ckpt_every=100, stage="outer")
trainer.train(system, [w, v], loss_fn, [{"q": 1}], args, Weights())
print("GRADS", json.dumps([w.grad.item(), v.grad.item()]))
"""


def test_torchrun_averages_the_gradients_of_its_ranks(tmp_path):
    """Two ranks over gloo. Rank 0's gradient (w, v) = (0.1, 0.4), rank 1's (0.2, none -> 0): the average both apply
    is (0.15, 0.2) (norm 0.25, not clipped); a sum would be (0.3, 0.4), which Adam alone could not tell apart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, ROOT=ROOT, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:  # a rank that failed leaves the other waiting for it: never leave it running
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    for out, _ in outs:
        grads = json.loads(next(l for l in out.splitlines() if l.startswith("GRADS"))[6:])
        assert grads == pytest.approx([0.15, 0.2], abs=1e-12)
    adam = _state(tmp_path / "run", 1)["optimizer"]["state"]
    assert adam[0]["exp_avg"].item() == pytest.approx(0.015) and adam[1]["exp_avg"].item() == pytest.approx(0.02)


def test_a_cut_target_gets_no_end_token_and_the_share_cut_is_reported(capsys):
    """tiny-llama's byte-level tokenizer: one token a letter. Budget 4 tokens:
    "ab"     (2): a b <eos> + padding      -> target mask 1 1 1 0 0
    "abcdef" (6): longer, cut to a b c d, NO end token (padding after it is masked) -> 1 1 1 1 0
    "abcd"   (4): not longer than 4, so it keeps its end token: a b c d <eos>       -> 1 1 1 1 1   (length L = 5)
    Reported: 1 of 3 targets is longer than the budget, 33.3%."""
    from loading import load_backbone
    bb = load_backbone("tiny-llama")
    eos, (a, b, c, d) = bb.tokenizer.eos_token_id, bb.encode("abcd")
    embeds, mask = torch.zeros(3, 2, bb.hidden_size), torch.ones(3, 2, dtype=torch.long)
    full_embeds, full_mask, ids, tmask = losses.append_targets(bb, embeds, mask, ["ab", "abcdef", "abcd"], 4)
    assert ids.tolist() == [[a, b, eos, eos, eos], [a, b, c, d, eos], [a, b, c, d, eos]]
    assert tmask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert full_mask.tolist() == [[1, 1] + m for m in tmask.tolist()] and full_embeds.shape == (3, 7, bb.hidden_size)
    capsys.readouterr()
    assert trainer.report_truncation(bb, ["ab", "abcdef", "abcd"], 4, "answers") == pytest.approx(1 / 3)
    assert "answers: 1/3 targets (33.3%) are longer than --max-target-tokens 4" in capsys.readouterr().out


def test_the_target_budget_is_160_tokens_on_a_cpu_and_2048_on_a_gpu():
    system = lambda kind: types.SimpleNamespace(backbones=[types.SimpleNamespace(device=torch.device(kind))])
    for kind, want in [("cpu", 160), ("cuda", 2048)]:
        args = types.SimpleNamespace(max_target_tokens=None)
        assert trainer.target_budget(args, system(kind)) == want and args.max_target_tokens == want
    assert trainer.target_budget(types.SimpleNamespace(max_target_tokens=7), system("cuda")) == 7  # given: kept

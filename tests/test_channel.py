"""The latent channel's controls (channel.py): what each control hands the last agent, and, on a channel trained
here between two tiny models, that shuffled latents carry another row's payload and zeroed latents carry none."""
import pytest
import torch

import channel
import tasks
from files import read_appended
from helpers import ROOT, run_args
from recursion import System


def digit_rows(phrasings):
    return [tasks.payload_row("digits", 1, d, p) for p in phrasings for d in "0123456789"]


def test_every_row_reads_a_partner_with_another_payload():
    rows = tasks.payload_rows("digits", 1, 5, "held-out") + tasks.payload_rows("digits", 2, 5, "held-out")
    rows = rows + rows[:2]  # two payloads twice
    partners = channel.partner(rows)
    assert all(rows[j]["final"] != r["final"] for r, j in zip(rows, partners))
    with pytest.raises(ValueError):
        channel.partner(rows[:1] * 3)


def test_each_control_hands_the_last_agent_what_it_says(monkeypatch):
    """shuffled = the partner's own thoughts, zeroed = zeros, row for row, in batches of any size: compared on what
    the last agent reads (its input embeddings, the latents spliced in), not on what a random model writes."""
    system = System(["tiny-llama", "tiny-qwen"], pattern="relay")
    rows = tasks.payload_rows("digits", 2, 5, "held-out")
    thoughts = channel.thoughts_of(system, rows, 3, batch_size=2)
    assert thoughts.shape == (5, 3, 64) and thoughts.std(0).mean() > 1e-4  # the rows' thoughts differ
    read = lambda bb, embeds, mask, gen: ([" ".join(f"{v:.5f}" for v in e[m.bool()].sum(-1).tolist())
                                           for e, m in zip(embeds, mask)], None, None)
    monkeypatch.setattr(channel, "write_answer", read)  # the "answer" is what the last agent read
    ask = lambda sent, control, bs: [r["text"] for r in channel.read_back(system, rows, sent, control, 6, bs)]
    partners = channel.partner(rows)
    assert ask(thoughts, "shuffled", 2) == ask(thoughts[partners], "trained", 3) != ask(thoughts, "trained", 5)
    assert ask(thoughts, "zeroed", 4) == ask(torch.zeros_like(thoughts), "trained", 1) != ask(thoughts, "trained", 2)
    recs = channel.read_back(system, rows, thoughts, "shuffled", 6, 2)
    assert [r["partner"] for r in recs] == [rows[j]["final"] for j in partners]


def test_stage_one_trains_the_senders_inner_link_only_and_reports_through_progress(tmp_path, capsys):
    system = System(["tiny-llama", "tiny-llama"], pattern="relay")
    channel.fresh_links(system, 0)
    before = {k: v.clone() for k, v in system.state_dict().items()}
    seen = []
    losses = channel.train_sender(system, digit_rows(tasks.PHRASINGS[:1]), run_args(
        tmp_path, steps=3, batch_size=4, max_target_tokens=8), progress=lambda step, loss: seen.append((step, loss)))
    assert seen == list(enumerate(losses, 1)) and len(losses) == 3
    assert "step" not in capsys.readouterr().out  # the caller's bar speaks, not the trainer's lines
    moved = {k for k, v in system.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("inner.sender.") for k in moved), moved


def test_shuffled_latents_break_a_tiny_trained_channel(tmp_path):
    """A channel trained here between two tiny random models: the sender reads one of two digits, the receiver must
    write it (bare: a random model learns two bytes faster than a box). Trained, each row writes its own digit;
    shuffled, each writes its partner's (its own at chance: 0 of 4 here); zeroed, every row writes the same text."""
    system = System(["tiny-llama", "tiny-llama"], pattern="relay")
    channel.fresh_links(system, 0)
    rows = [dict(tasks.payload_row("digits", 1, d, p), answer=d) for p in tasks.PHRASINGS[:2] for d in "01"]
    common = dict(batch_size=4, warmup=2, max_target_tokens=4, ckpt_every=1000)
    channel.train_sender(system, rows, run_args(tmp_path / "inner", steps=100, lr=1e-2, **common))
    channel.train_reader(system, rows, 16, run_args(tmp_path / "outer", steps=800, lr=3e-2, **common))
    thoughts = channel.thoughts_of(system, rows, 16, 4)
    got = {c: channel.read_back(system, rows, thoughts, c, 2, 4) for c in channel.CONTROLS}
    assert [r["text"] for r in got["trained"]] == [r["final"] for r in rows]
    assert [r["text"] for r in got["shuffled"]] == [r["partner"] for r in got["shuffled"]] == ["1", "0", "1", "0"]
    assert not any(r["correct"] for r in got["shuffled"] + got["zeroed"])
    assert len({r["text"] for r in got["zeroed"]}) == 1


def test_the_capacity_command_gives_the_same_rows_again_and_resumes(tmp_path):
    """scripts/capacity.py twice from nothing, with the same seed: the same answers, row for row, and the same
    table; one family alone: its rows of the run with both; --resume on a finished run changes nothing."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("capacity", f"{ROOT}/scripts/capacity.py")
    capacity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capacity)
    argv = ["--agents", "tiny-llama,tiny-llama", "--families", "digits,words", "--m-values", "2", "--k-values",
            "1,2", "--inner-steps", "2", "--steps", "2", "--eval-rows", "2", "--max-new-tokens", "4"]
    timed = ("train_seconds", "eval_seconds")
    read = lambda out, name: [{k: v for k, v in r.items() if k not in timed} for r in read_appended(out / name)]
    for out in (tmp_path / "a", tmp_path / "b"):
        assert capacity.main(argv + ["--out", str(out)]) == 0
    for name in ("rows.jsonl", "cells.jsonl"):
        assert read(tmp_path / "a", name) == read(tmp_path / "b", name)
    assert len(read(tmp_path / "a", "rows.jsonl")) == 2 * 2 * 2 * len(capacity.CONTROLS)  # families x k x rows
    # one family alone gives that family's rows of the run with both (stage 1 starts from the seed for each family)
    alone = argv[:argv.index("--families") + 1] + ["words"] + argv[argv.index("--families") + 2:]
    assert capacity.main(alone + ["--out", str(tmp_path / "w")]) == 0
    both = read(tmp_path / "a", "rows.jsonl")
    assert read(tmp_path / "w", "rows.jsonl") == [r for r in both if r["family"] == "words"]
    cells = read(tmp_path / "a", "cells.jsonl")  # their losses too: rows of a tiny model can hide a changed start
    assert read(tmp_path / "w", "cells.jsonl") == [c for c in cells if c["family"] == "words"]
    before = (tmp_path / "a" / "rows.jsonl").read_bytes()
    assert capacity.main(argv + ["--out", str(tmp_path / "a"), "--resume"]) == 0
    assert (tmp_path / "a" / "rows.jsonl").read_bytes() == before

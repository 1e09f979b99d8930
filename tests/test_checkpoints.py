"""Training loses nothing: checkpoints are whole, checked and never deleted by a later run; bad settings stop at once."""
import json
import os

import pytest
import torch

import checkpoints
import errors
import trainer
import train_inner
import train_outer
from recursion import System
from checkpoints import CheckpointError, json_digest, load_links, load_tensors, save_tensors
from helpers import ROWS, edit_link_json, flip_byte, refused, run_args as _args


@pytest.fixture(scope="module")
def pair():
    return System(["tiny-llama", "tiny-qwen"])  # inner 64->64, 96->96; outer 64->96 and 96->64


def _randomise(system, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for link in checkpoints.links_of(system).values():
            for t in link.state_dict().values():  # every tensor: weights, biases, LayerNorms, the scale buffer
                t.copy_(torch.randn(t.shape, generator=g))


def _tensors(system):
    return {f"{name}.{k}": t for name, link in checkpoints.links_of(system).items() for k, t in link.state_dict().items()}


def test_every_link_tensor_round_trips_bit_exactly(tmp_path, pair):
    _randomise(pair, 1)
    pair.save_links(str(tmp_path / "ck"))
    other = System(["tiny-llama", "tiny-qwen"])
    _randomise(other, 2)
    other.load_links(str(tmp_path / "ck"))
    a, b = _tensors(pair), _tensors(other)
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def _refused(system, path, *words):
    refused(lambda: system.load_links(path), *words)


def test_truncated_tensor_file_and_half_written_pair_are_refused(tmp_path, pair):
    path = str(tmp_path / "ck")
    pair.save_links(path)
    blob = open(path + ".safetensors", "rb").read()
    open(path + ".safetensors", "wb").write(blob[:len(blob) // 3])
    _refused(pair, path, path + ".safetensors")
    # a new tensor file next to the previous checkpoint's JSON: what a reader could see between the two renames
    pair.save_links(path)
    _randomise(pair, 3)
    pair.save_links(str(tmp_path / "newer"))
    os.replace(str(tmp_path / "newer.safetensors"), path + ".safetensors")
    _refused(pair, path, "does not match")


def test_json_without_links_or_checksum_and_non_finite_tensors_are_refused(tmp_path, pair):
    path = str(tmp_path / "ck")
    pair.save_links(path)
    info = json.load(open(path + ".json"))
    no_links = {k: v for k, v in info.items() if k != "links"}
    json.dump(no_links, open(path + ".json", "w"))
    _refused(pair, path, "json_sha256")  # an edited JSON: its own checksum no longer matches
    json.dump(dict(no_links, json_sha256=json_digest(no_links)), open(path + ".json", "w"))
    _refused(pair, path, "no 'links'")  # whole, but not a link checkpoint (an adapter's JSON, say)
    json.dump({k: v for k, v in info.items() if k != "sha256"}, open(path + ".json", "w"))
    _refused(pair, path, "no sha256")
    open(path + ".json", "w").write('{"links": ')
    _refused(pair, path, "not valid JSON")
    with pytest.raises(CheckpointError, match="not finite"):
        save_tensors(str(tmp_path / "nan"), {"w": torch.tensor([1.0, float("nan")])}, {})
    save_tensors(str(tmp_path / "nan"), {"w": torch.tensor([1.0, 2.0])}, {})  # then NaN with a matching checksum
    from safetensors.torch import save_file
    from checkpoints import sha256_file
    save_file({"w": torch.tensor([1.0, float("inf")])}, str(tmp_path / "nan.safetensors"))
    json.dump({"sha256": sha256_file(str(tmp_path / "nan.safetensors"))}, open(tmp_path / "nan.json", "w"))
    with pytest.raises(CheckpointError, match="non-finite values"):
        load_tensors(str(tmp_path / "nan"))


# ---- the run folder -------------------------------------------------------------------------------------------

def _run(system, args, calls=None):
    def loss_fn(batch):
        (calls if calls is not None else []).append(1)
        return sum((p ** 2).sum() for p in system.outer.parameters()) * 1e-3
    checkpoints.prepare_out(args)  # as the scripts do, right after parsing
    return trainer.train(system, system.outer.parameters(), loss_fn, ROWS, args)


@pytest.fixture()
def solo():
    return System(["tiny-llama"])


def test_a_new_run_never_deletes_an_old_one(tmp_path, solo, capsys):
    _run(solo, _args(tmp_path, steps=8))  # an old run: step-000006, step-000008
    with pytest.raises(errors.UserError, match="already holds a run.*--resume.*--overwrite"):
        _run(solo, _args(tmp_path, steps=4))
    assert sorted(os.listdir(tmp_path)) == ["latest", "links.json", "links.safetensors", "step-000006", "step-000008"]
    _run(solo, _args(tmp_path, steps=4, overwrite=True))  # --overwrite: the old run goes, the new one is whole
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("step-")) == ["step-000002", "step-000004"]
    assert (tmp_path / "latest").read_text() == "step-000004"
    assert json.load(open(tmp_path / "links.json"))["step"] == 4
    solo.load_links(str(tmp_path / "links"))
    (tmp_path / "notes.txt").write_text("mine")  # --overwrite never deletes what a run did not write
    with pytest.raises(errors.UserError, match="not a training run's.*notes.txt"):
        _run(solo, _args(tmp_path, overwrite=True))
    assert (tmp_path / "latest").exists()


def test_out_is_checked_writable_before_the_first_step(tmp_path, solo):
    (tmp_path / "file").write_text("")
    calls = []
    with pytest.raises(errors.UserError, match="not writable"):
        _run(solo, _args(tmp_path / "file" / "run"), calls)
    assert calls == []  # no step was trained and then lost


def test_a_kill_while_saving_leaves_temp_files_that_the_next_start_removes(tmp_path, solo, monkeypatch):
    real = torch.save

    def dies_on_step_4(obj, f, *a, **k):
        if obj.get("step") == 4:
            raise KeyboardInterrupt  # the process dies half-way through writing step 4
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", dies_on_step_4)
    with pytest.raises(KeyboardInterrupt):
        _run(solo, _args(tmp_path, steps=6))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # the half-written step
    assert (tmp_path / "latest").read_text() == "step-000002"
    monkeypatch.setattr(torch, "save", real)
    _run(solo, _args(tmp_path, steps=6, resume=True))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("step-")) == ["step-000004", "step-000006"]


def test_resume_refuses_to_change_what_is_trained(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_outer, "load_rows", lambda *a, **k: ROWS[:2])
    argv = ["--agents", "tiny-llama", "--steps", "2", "--out", str(tmp_path), "--eval-questions", "0", "--rounds", "2",
            "--latent-steps", "2", "--log-every", "100"]
    assert train_outer.main(argv) == 0
    capsys.readouterr()
    assert train_outer.main(argv + ["--resume", "--train-inner", "--steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--train-inner was False" in err and "--overwrite" in err, err
    assert (tmp_path / "latest").read_text() == "step-000002"
    assert train_outer.main(argv + ["--resume", "--steps", "3", "--lr", "1e-3"]) == 0  # how, not what: a note
    assert "note: resuming with changed settings: --lr 0.0005 -> 0.001, --steps 2 -> 3" in capsys.readouterr().out


@pytest.mark.parametrize("script", [train_inner, train_outer])
def test_a_taken_out_is_refused_before_any_model_loads(tmp_path, script, monkeypatch, capsys):
    (tmp_path / "latest").write_text("step-000002")  # a run's folder
    loaded = []
    monkeypatch.setattr(script, "system_from_args", lambda a: loaded.append(a) or pytest.fail("a model was loaded"))
    assert script.main(["--agents", "tiny-llama", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0] and loaded == [], err


def test_resume_and_overwrite_together_and_resume_of_nothing_are_refused(tmp_path, solo):
    with pytest.raises(errors.UserError, match="contradict"):
        checkpoints.prepare_out(_args(tmp_path, resume=True, overwrite=True))
    with pytest.raises(errors.UserError, match="no checkpoint"):
        checkpoints.prepare_out(_args(tmp_path / "empty", resume=True))


def test_link_checkpoint_with_a_link_missing_from_its_tensors_is_refused(tmp_path, pair):
    path = str(tmp_path / "ck")
    pair.save_links(path)
    tensors, info = load_tensors(path)
    save_tensors(path, {k: v for k, v in tensors.items() if not k.startswith("inner.solver.")}, info)
    with pytest.raises(CheckpointError, match="inner.solver"):
        load_links(path, checkpoints.links_of(pair))


# ---- every checkpoint file under a checksum --------------------------------------------------------------------

def test_a_link_json_edited_to_name_other_agents_is_refused(tmp_path):
    """Its checksum not recomputed: the edit is refused; recomputed, with the sizes unchanged: the checkpoint is
    refused for agents it was not trained for; with the sizes edited too: the tensors do not fit them (a clean error,
    not torch's size mismatch deep in load_state_dict)."""
    path = str(tmp_path / "ck")
    for recompute, sizes, words in [(False, None, [path + ".json", "json_sha256"]), (True, None, ["trained for agents"]),
                                    (True, 96, [path + ".safetensors", "is (64,)", "needs (96,)"])]:
        System(["tiny-llama", "tiny-llama"]).save_links(path)
        edit_link_json(path + ".json", recompute, sizes)
        _refused(System(["tiny-qwen", "tiny-qwen"] if sizes else ["tiny-llama", "tiny-llama"]), path, *words)
    System(["tiny-llama", "tiny-llama"]).save_links(path)
    System(["tiny-llama", "tiny-llama"]).load_links(path)  # unedited, the matching system loads it


@pytest.mark.parametrize("name", ["state.pt", "run.json", "links.json", "links.safetensors"])
def test_one_flipped_byte_in_any_checkpoint_file_is_refused(tmp_path, solo, name):
    _run(solo, _args(tmp_path, steps=4))
    flip_byte(str(tmp_path / "step-000004" / name))
    calls = []
    refused(lambda: _run(solo, _args(tmp_path, steps=6, resume=True), calls), name.split(".")[0], "--overwrite")
    assert calls == []  # no step was trained


def test_a_resume_with_fewer_steps_than_done_is_refused(tmp_path, solo):
    _run(solo, _args(tmp_path, steps=4))
    with pytest.raises(errors.UserError, match="has done 4 steps already.*--steps 4 or more"):
        _run(solo, _args(tmp_path, steps=2, resume=True))


def test_checkpoint_run_reads_the_checked_checkpoint(tmp_path, solo):
    """What scripts/capacity.py asks before it skips a finished stage: None with no checkpoint, the step count of the
    one 'latest' names, and a one-line refusal when that checkpoint is corrupt."""
    assert checkpoints.checkpoint_run(str(tmp_path)) is None
    _run(solo, _args(tmp_path, steps=4))
    assert checkpoints.checkpoint_run(str(tmp_path))["step"] == 4
    flip_byte(str(tmp_path / "step-000004" / "run.json"))
    refused(lambda: checkpoints.checkpoint_run(str(tmp_path)), "run", "--overwrite")


def test_checkpoints_written_before_the_checksums_still_load_and_resume(tmp_path, solo):
    """A link JSON without json_sha256 and a step folder without "files" (what earlier versions wrote) load."""
    _run(solo, _args(tmp_path, steps=4))
    for path in [tmp_path / "links.json", tmp_path / "step-000004" / "links.json"]:
        info = json.load(open(path))
        os.remove(path)  # OUT/links.json is a hard link to the step folder's
        json.dump({k: v for k, v in info.items() if k not in ("json_sha256", "files")}, open(path, "w"))
    solo.load_links(str(tmp_path / "links"))
    state = tmp_path / "step-000004" / "state.pt"
    whole = state.read_bytes()
    state.write_bytes(whole[:len(whole) // 2])  # no checksum to catch it: torch.load's error, in one line
    with pytest.raises(errors.UserError, match="cannot load .*state.pt.*--overwrite") as e:
        _run(solo, _args(tmp_path, steps=6, resume=True))
    assert "\n" not in str(e.value)
    state.write_bytes(whole)
    _run(solo, _args(tmp_path, steps=6, resume=True))
    assert (tmp_path / "latest").read_text() == "step-000006"
    assert "files" in json.load(open(tmp_path / "links.json"))  # what it writes now has every checksum

"""Every bad input to every CLI is ONE line on stderr naming the problem and the fix, exit code 2, no traceback.

TABLE holds one row per bad input: the CLI, its arguments, a word the line must contain, and the files the input
needs (written before the CLI runs). Placeholders in the arguments: {tmp} (this row's own folder), {run} (a copy of
a finished 2-step train_outer.py run of tiny-llama x2, made once per module, with files written into it after the
copy: a flipped byte, an edited JSON, ...) and {rows} (the rows that run trained on).
Every CLI runs in this process through its main(argv); nearly all rows stop at argument parsing, before any model.
"""
import importlib
import json
import os
import shutil

import pytest

from helpers import ROWS, edit_link_json, flip_byte

NOT_UTF8 = b'{"question": "caf\xe9", "answer": "x"}\n'  # Latin-1, not UTF-8
CORRUPT = b'{"question": "q", "answer":\n'
RUN = ["--agents", "tiny-llama,tiny-llama", "--data", "{rows}", "--rounds", "1", "--latent-steps", "1",
       "--eval-questions", "0", "--max-target-tokens", "8", "--log-every", "100", "--batch-size", "1"]


# ---- what a row writes into {run} before the CLI runs -------------------------------------------------------------

def cut_short(path):
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[:len(blob) // 2])


def step(run):
    return os.path.join(run, open(os.path.join(run, "latest")).read().strip())


PREP = {
    "state.pt flipped": lambda run: flip_byte(os.path.join(step(run), "state.pt")),
    "state.pt cut": lambda run: cut_short(os.path.join(step(run), "state.pt")),
    "state.pt missing": lambda run: os.remove(os.path.join(step(run), "state.pt")),
    "run.json edited": lambda run: open(os.path.join(step(run), "run.json"), "a").write(" "),
    "step links.json edited": lambda run: edit_link_json(os.path.join(step(run), "links.json")),
    "latest names nothing": lambda run: open(os.path.join(run, "latest"), "w").write("step-000099"),
    "links.json edited": lambda run: edit_link_json(os.path.join(run, "links.json")),
    "links.json other sizes, recomputed": lambda run: edit_link_json(os.path.join(run, "links.json"), True, 96),
    "links.safetensors flipped": lambda run: flip_byte(os.path.join(run, "links.safetensors")),
}


def out_rows(cli, extra=()):
    """--out: an existing file, an empty string, a place nothing can be written (/proc; root may write anywhere
    else), a path under a file."""
    return [(cli, [*extra, "--out", "{tmp}/file"], "needs a folder", {"file": b""}),
            (cli, [*extra, "--out", ""], "empty", {}),
            (cli, [*extra, "--out", "/proc/recursivemas-test/out"], "not writable", {}),
            (cli, [*extra, "--out", "{tmp}/file/out"], "cannot be made", {"file": b""})]


def float_rows(cli, options, extra=()):
    return [(cli, [*extra, opt, v], opt, {}) for opt in options for v in ("nan", "inf")]


def flag_rows(cli, pairs, prefix=(), word="{flag}"):
    """(option, bad value) pairs: the line names the option (word: how, e.g. "argument {flag}:")."""
    return [(cli, [*prefix, flag, value], word.format(flag=flag), {}) for flag, value in pairs]


def file_rows(cli, flag, extra, name, empty, corrupt, not_utf8, wrong, words):
    """A data file a CLI reads: empty, corrupt JSON, not UTF-8, a row without a field; words: the line's word for
    each, in that order."""
    return [(cli, [*extra, flag, "{tmp}/" + name], w, {name: content})
            for content, w in zip((empty, corrupt, not_utf8, wrong), words)]


TABLE = [
    # --out, checked at parsing in every CLI that writes (bench.py used to find out after all its measuring)
    *out_rows("evaluate"), *out_rows("bench"), *out_rows("train_inner"), *out_rows("train_outer"),
    *out_rows("train_single"),
    # non-finite floats, refused by every float option
    *float_rows("agents", ["--temperature", "--top-p", "--tool-timeout"]),
    *float_rows("evaluate", ["--temperature", "--top-p", "--test-timeout", "--tool-timeout"]),
    *float_rows("bench", ["--grad-temperature", "--tool-timeout"]),
    *float_rows("train_inner", ["--lr", "--tool-timeout"]),
    *float_rows("train_outer", ["--lr"]),
    *float_rows("train_single", ["--lora-alpha", "--lora-dropout"]),
    # numbers, choices and names each CLI refuses (the training options: cli.add_training_args, shared)
    *flag_rows("agents", [("--max-new-tokens", "0"), ("--max-new-tokens", "10000000"), ("--top-p", "0"),
                          ("--top-p", "1.5"), ("--temperature", "-1"), ("--device", "tpu"), ("--rounds", "0"),
                          ("--search-docs", "/no/such.jsonl"), ("--latent-steps", "-12"), ("--pattern", "ring"),
                          ("--link-variant", "3layer"), ("--fast", "turbo")]),
    ("agents", ["--question", "caf\udce9"], "UTF-8", {}),
    *flag_rows("train_outer", [("--steps", "0"), ("--steps", "ten"), ("--batch-size", "0"), ("--lr", "0"),
                               ("--lr", "-0.0001"), ("--ckpt-every", "0"), ("--log-every", "0"), ("--rounds", "0"),
                               ("--latent-steps", "-1")]),
    *flag_rows("train_inner", [("--steps", "-3"), ("--max-target-tokens", "0"), ("--warmup", "-1")]),
    *flag_rows("train_single", [("--lora-r", "0")]),
    ("train_single", ["--method", "qlora"], "invalid choice: 'qlora'", {}),
    ("train_single", ["--lora-targets", "all,q_proj"], "'all' or module names", {}),  # 'all' names every module
    *flag_rows("evaluate", [("--limit", "0"), ("--samples", "0"), ("--batch-size", "-1"), ("--protocol", "slow"),
                            ("--judge", "smollm")]),
    *flag_rows("evaluate", [("--final-answer-tokens", "-1"), ("--final-answer-tokens", "x"),
                            ("--test-timeout", "0"), ("--rounds", "0")], prefix=["--protocol", "paper"]),
    *[("evaluate", argv, word, {}) for argv, word in [
        (["--compare", "single,magic"], "magic"), (["--compare", "single,lora"], "--adapter"),
        (["--method", "full"], "--weights"), (["--links", "/nonexistent/links", "--method", "latent"], "--links"),
        (["--benchmark", "gpqa_diamond", "--gpqa-path", "/nonexistent/gpqa.jsonl"], "GPQA_PATH"),
        (["--benchmark", "bamboogle"], "BAMBOOGLE_PATH"), (["--benchmark", "livecodebench"], "--lcb-path")]],
    *flag_rows("bench", [("--rounds", "abc"), ("--questions", "0"), ("--step-batch", "0"), ("--skip", "nonsense"),
                         ("--rollout-m", "-4"), ("--rounds", "0"), ("--questions", "9"), ("--grad-temperature", "0"),
                         ("--rollout-batch", "1,x"), ("--latent-steps", "-1")], word="argument {flag}: "),
    ("bench", ["--grad-temperature", "1,nan"], "--grad-temperature", {}),
    ("bench", ["--grad-agents", "{tmp}/empty"], "no config.json", {"empty/": b""}),
    ("bench", ["--step-modes", "nosuch"], "nosuch", {}),
    ("bench", ["--step-modes", "off,turbo"], "turbo", {}),
    # --search-docs: read and checked at parsing
    *file_rows("agents", "--search-docs", [], "docs.jsonl", b"\n", b'{"title": "a", "text": \n',
               b'{"title": "caf\xe9", "text": "x"}\n', b'["a title", "a text"]\n',
               ["no passages", "not JSON", "UTF-8", "list"]),
    ("agents", ["--search-docs", "{tmp}/docs.jsonl"], "line 2", {"docs.jsonl": b'{"text": "a"}\n{"title": 3}\n'}),
    ("evaluate", ["--search-docs", "{tmp}/docs.jsonl"], "UTF-8", {"docs.jsonl": b'{"text": "\xff"}\n'}),
    ("bench", ["--search-docs", "{tmp}/docs.jsonl"], "not JSON", {"docs.jsonl": b"{\n"}),
    # --agents: checked before any model loads
    *[(cli, ["--agents", "{tmp}/empty"], "no config.json", {"empty/": b""}) for cli in ["agents", "evaluate", "bench"]],
    *[(cli, ["--agents", "tiny-llama,{tmp}/fake.gguf"], "start with 'GGUF'", {"fake.gguf": b"not a model\n"})
      for cli in ["agents", "train_inner", "train_outer", "train_single"]],
    # the files the benchmark loaders read from the user's path
    *file_rows("evaluate", "--bamboogle-path", ["--benchmark", "bamboogle"], "b.jsonl", b"", CORRUPT, NOT_UTF8,
               b'{"question": "q"}\n', ["no rows", "not JSON", "UTF-8", "'answer'"]),
    *file_rows("evaluate", "--gpqa-path", ["--benchmark", "gpqa_diamond"], "g.jsonl", b"\n", CORRUPT, NOT_UTF8,
               b'{"answer": "A"}\n', ["no rows", "not JSON", "UTF-8", "'question'"]),
    *file_rows("evaluate", "--lcb-path", ["--benchmark", "livecodebench"], "l.jsonl", b"", CORRUPT, NOT_UTF8,
               b'{"public_test_cases": "[]"}\n', ["no rows", "not JSON", "UTF-8", "question_content"]),
    *file_rows("evaluate", "--lcb-path", ["--benchmark", "livecodebench"], "l.json", b"", b'[{"a": ', b'["\xe9"]',
               b'[{"public_test_cases": "[]"}]', ["not JSON", "not JSON", "UTF-8", "question_content"]),
    ("evaluate", ["--benchmark", "livecodebench", "--lcb-path", "{tmp}/l.json"], "list", {"l.json": b'{"a": 1}'}),
    ("evaluate", ["--benchmark", "bamboogle", "--bamboogle-path", "{tmp}/b.jsonl"], "line 2 is a list, not a JSON",
     {"b.jsonl": b'{"question": "q", "answer": "a"}\n["q", "a"]\n'}),
    # the text frameworks' sizes, and methods, named before any model loads
    ("evaluate", ["--method", "moa", "--moa-layers", "0"], "--moa-layers", {}),
    ("evaluate", ["--method", "textgrad", "--textgrad-steps", "-1"], "--textgrad-steps", {}),
    ("evaluate", ["--compare", "moa,loopy"], "unknown method 'loopy'", {}),
    # --links: checked at parsing without any model: its files, both checksums, its tensors against its JSON
    *[(cli, ["--agents", "tiny-qwen,tiny-qwen", "--links", "{run}/links", *extra], "in its JSON but 64 -> 64",
       {"prep": "links.json other sizes, recomputed"})
      for cli, extra in [("agents", []), ("evaluate", ["--method", "latent"]), ("bench", []),
                         ("train_outer", ["--out", "{tmp}/o"])]],
    *[(cli, ["--agents", "tiny-llama,tiny-llama", "--links", "{run}/links", *extra], "json_sha256",
       {"prep": "links.json edited"}) for cli, extra in [("agents", []), ("train_inner", ["--out", "{tmp}/o"])]],
    ("evaluate", ["--agents", "tiny-llama,tiny-llama", "--method", "latent", "--links", "{run}/links"], "sha256",
     {"prep": "links.safetensors flipped"}),
    ("agents", ["--links", "{tmp}/nothing"], "no checkpoint", {}),
    # --data: its file checked before any model loads
    ("train_outer", ["--data", "/no/such.jsonl"], "not found", {}), ("train_outer", ["--data", "/"], "folder", {}),
    *[("train_outer", ["--data", "{tmp}/rows.json"], word, {"rows.json": content}) for content, word in [
        (b"", "empty"), (b"\xff\xfe\x00binary", "UTF-8"), (b"[]", "non-empty"), (b'{"rows": []}', "non-empty")]],
    # --resume: every file of the checkpoint checked against its checksum, before any model loads
    *[("train_outer", [*RUN, "--out", "{run}", "--resume", "--steps", "3"], word, {"prep": prep})
      for prep, word in [("state.pt flipped", "state.pt"), ("state.pt cut", "state.pt"),
                         ("state.pt missing", "missing"), ("run.json edited", "run.json"),
                         ("step links.json edited", "json_sha256"), ("latest names nothing", "not a step folder")]],
    ("train_outer", [*RUN, "--out", "{run}", "--resume", "--steps", "1"], "2 steps", {}),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-step train_outer.py run (checkpoints at steps 1 and 2) and its rows file."""
    import train_outer
    base = tmp_path_factory.mktemp("trained")
    rows = base / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    run = base / "run"
    argv = [a.replace("{rows}", str(rows)) for a in RUN] + ["--out", str(run), "--steps", "2", "--ckpt-every", "1"]
    assert train_outer.main(argv) == 0
    return str(run), str(rows)


# Put before each row's arguments (a row's own --agents / --out win): should a check go missing, the CLI then runs
# a few seconds of tiny work and exits 0, so its row fails fast, and writes nothing outside the row's folder.
CHEAP = {"agents": ["--agents", "tiny-llama", "--max-new-tokens", "2", "--rounds", "1", "--latent-steps", "1"],
         "evaluate": ["--agents", "tiny-llama", "--limit", "1", "--max-new-tokens", "2", "--out", "{tmp}/cheap"],
         "bench": ["--agents", "tiny-llama", "--skip", "e2e,rollout,train,step,grad", "--out", "{tmp}/cheap"],
         "train_inner": ["--agents", "tiny-llama", "--steps", "1", "--max-target-tokens", "8", "--out", "{tmp}/cheap"],
         "train_outer": ["--agents", "tiny-llama", "--steps", "1", "--max-target-tokens", "8", "--eval-questions", "0",
                         "--rounds", "1", "--latent-steps", "1", "--out", "{tmp}/cheap"],
         "train_single": ["--agents", "tiny-llama", "--steps", "1", "--max-target-tokens", "8", "--out",
                          "{tmp}/cheap"]}


def call(cli, argv):
    """The exit code of CLI's main(argv), run in this process (a return value or SystemExit's code)."""
    try:
        return importlib.import_module(cli).main(argv)
    except SystemExit as e:
        return e.code


def setup(row, tmp_path, trained):
    cli, argv, word, files = row
    run = str(tmp_path / "run")
    needs_run = any("{run}" in a for a in argv)
    if needs_run:
        shutil.copytree(trained[0], run)  # copies, not the hard links a run folder holds
        if "prep" in files:
            PREP[files["prep"]](run)
    for name, content in files.items():
        if name == "prep":
            continue
        if name.endswith("/"):
            os.makedirs(tmp_path / name, exist_ok=True)
        else:
            (tmp_path / name).write_bytes(content)
    return [a.replace("{tmp}", str(tmp_path)).replace("{run}", run).replace("{rows}", trained[1])
            for a in CHEAP[cli] + argv]


def _id(row):
    cli, argv, word, files = row
    return f"{cli} {' '.join(argv)} [{files.get('prep', ','.join(files))}]".replace("{", "").replace("}", "")


@pytest.mark.parametrize("row", TABLE, ids=[_id(r) for r in TABLE])
def test_bad_input_is_one_line_exit_2(row, tmp_path, trained, capsys, monkeypatch):
    for env in ("BAMBOOGLE_PATH", "GPQA_PATH", "LCB_PATH"):
        monkeypatch.delenv(env, raising=False)
    argv = setup(row, tmp_path, trained)
    capsys.readouterr()
    code = call(row[0], argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and row[2] in lines[0], err
    assert "Traceback" not in err


def test_the_untouched_run_resumes_and_its_links_load(tmp_path, trained, capsys):
    """The rows above fail because of what each one changed: the same run, untouched, resumes and its links load."""
    argv = setup(("train_outer", [*RUN, "--out", "{run}", "--resume", "--steps", "3"], "", {}), tmp_path, trained)
    assert call("train_outer", argv) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    assert call("agents", ["--agents", "tiny-llama,tiny-llama", "--links", str(tmp_path / "run" / "links"),
                           "--max-new-tokens", "2", "--latent-steps", "1", "--rounds", "1"]) == 0

"""The generated tasks (tasks.py): the same rows from the same seed, training and held-out parts that share no
payload, number triple, phrasing or template, and answers the scorer reads back."""
import re

import pytest

import benchmarks
import tasks
from rows import load_rows


def carried(row):
    """The payload agent 1's text carries, read back from the text (not from the row's own fields)."""
    text = row["question"][0]
    for phrasing in tasks.PHRASINGS:
        head, tail = phrasing.split("{p}")
        if text.startswith(head) and text.endswith(tail):
            return text[len(head):len(text) - len(tail)]
    raise AssertionError(f"no phrasing matches {text!r}")


def phrasing_of(row):
    payload = carried(row)
    return row["question"][0].replace(payload, "{p}", 1)


def skeleton(question):
    return re.sub(r"\d+", "#", question)


@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_payload_rows_come_from_the_seed(family):
    for split in ("train", "held-out"):
        assert tasks.payload_rows(family, 4, 30, split, seed=3) == tasks.payload_rows(family, 4, 30, split, seed=3)
        assert tasks.payload_rows(family, 4, 30, split, seed=3) != tasks.payload_rows(family, 4, 30, split, seed=4)


@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_held_out_payloads_and_phrasings_never_occur_in_training_rows(family):
    for k in range(1, 7):
        train = tasks.payload_rows(family, k, 2000, "train")
        held = tasks.payload_rows(family, k, 24, "held-out")
        assert held and {carried(r) for r in train}.isdisjoint(carried(r) for r in held)
        assert {phrasing_of(r) for r in train}.isdisjoint(phrasing_of(r) for r in held)
        size = (lambda r: len(r["final"].split())) if family == "words" else (lambda r: len(r["final"]))
        assert {size(r) for r in train + held} == {k} and all(r["final"] in r["question"][0] for r in train + held)
        assert len({r["final"] for r in held}) == len(held)  # distinct: a shuffled row reads another payload
        # the last agent's prompt is the same for every row: only agent 1's latents can carry the payload
        assert {tuple(r["question"][1:]) for r in train + held} == {(tasks.ASK,)}


@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_the_scorer_reads_a_payload_back_and_refuses_another(family):
    rows = tasks.payload_rows(family, 3, 20, "held-out")
    for row, other in zip(rows, rows[1:] + rows[:1]):
        item = {"kind": "qa", "gold": row["final"]}
        assert benchmarks.score(item, row["answer"])[:2] == (row["final"], True)
        assert benchmarks.score(item, f"It was \\boxed{{{row['final']}}}.")[1]
        assert not benchmarks.score(item, other["answer"])[1]


def test_arith2_is_generated_the_same_way_every_time():
    assert load_rows("arith2") == load_rows("arith2")
    assert benchmarks.load_benchmark("arith2") == benchmarks.load_benchmark("arith2")
    assert tasks.arith_rows(50, "train", seed=1) != tasks.arith_rows(50, "train", seed=2)


def test_arith2_training_rows_and_held_out_questions_share_no_template_and_no_numbers():
    train, held = load_rows("arith2"), benchmarks.load_benchmark("arith2")
    assert len(held) >= 200
    numbers = lambda q: tuple(int(x) for x in re.findall(r"\d+", q))
    assert {skeleton(r["question"]) for r in train}.isdisjoint(skeleton(it["question"]) for it in held)
    assert {numbers(r["question"]) for r in train}.isdisjoint(numbers(it["question"]) for it in held)
    assert len({skeleton(r["question"]) for r in train}) == len(tasks.ARITH_TEMPLATES) - tasks.HELD_OUT_TEMPLATES
    assert len({skeleton(it["question"]) for it in held}) == tasks.HELD_OUT_TEMPLATES


def test_arith2_answers_are_right_and_read_back_by_the_scorer():
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    held = benchmarks.load_benchmark("arith2")
    for row, it in zip(tasks.arith_rows(len(held), "held-out"), held):
        a, b, c = row["numbers"]
        template = next(t for t in tasks.ARITH_TEMPLATES if t[2].format(a=a, b=b, c=c) == it["question"])
        assert it["gold"] == str(ops[template[1]](ops[template[0]](a, b), c))  # computed here, not by tasks.py
        assert benchmarks.score(it, row["answer"])[1]
        assert not benchmarks.score(it, row["answer"].replace(f"{{{it['gold']}}}", f"{{{int(it['gold']) + 1}}}"))[1]
    for row in load_rows("arith2")[:200]:  # the worked steps hold the answer the box states
        assert row["refined_plan"].endswith(f"= {row['final']}") and "?" not in row["refined_plan"]

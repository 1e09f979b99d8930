"""evaluate.py's figures against numbers worked out by hand: the Wilson interval, the mean and sd over seeds, pass@k,
tokens / latent steps / seconds per question, the comparison table, and what differs between seeds. Each expected
value is a literal, derived in the comment next to it; scripts/planted_errors.py plants an error in each formula behind
them and checks that these tests catch it."""
import json
import math

import pytest
import torch

import evaluate

TINY = ["--agents", "tiny-llama", "--benchmark", "gsm8k", "--max-new-tokens", "8", "--fast", "off"]


# Wilson score interval, z = 1.96: centre (p + z²/2n) / (1 + z²/n), half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
#   3/5:  p = 0.6, z²/n = 0.76832, den = 1.76832; centre = 0.98416 / 1.76832 = 0.55655;
#         half = 1.96·sqrt(0.048 + 0.038416) / 1.76832 = 1.96·0.293966 / 1.76832 = 0.32584  ->  [0.2307, 0.8824]
#   1/10: p = 0.1, den = 1.38416; centre = 0.29208 / 1.38416 = 0.21102;
#         half = 1.96·sqrt(0.009 + 0.009604) / 1.38416 = 0.19314                           ->  [0.0179, 0.4042]
#   0/5:  centre = half = 0.38416 / 1.76832 = 0.21724                                       ->  [0,      0.4345]
#   5/5:  centre = 1.38416 / 1.76832 = 0.78276, half = 0.21724                              ->  [0.5655, 1]
#   7/12: p = 0.58333, den = 1.32013; centre = 0.74340 / 1.32013 = 0.56312;
#         half = 1.96·sqrt(0.020255 + 0.006669) / 1.32013 = 0.24362                         ->  [0.3195, 0.8067]
WILSON = [(3, 5, 0.2307, 0.8824), (1, 10, 0.0179, 0.4042), (0, 5, 0.0, 0.4345), (5, 5, 0.5655, 1.0),
          (7, 12, 0.3195, 0.8067)]


@pytest.mark.parametrize("k,n,lo,hi", WILSON, ids=[f"{k}/{n}" for k, n, _, _ in WILSON])
def test_wilson_interval_equals_the_interval_by_hand(k, n, lo, hi):
    got = evaluate.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert 0.0 <= got[0] and got[1] <= 1.0  # clipped to [0, 1] exactly (0/5 is -3e-17, 5/5 is 1 + 2e-16 unclipped)
    assert evaluate.wilson(0, 0) == (0.0, 0.0)  # no rows


def _rows(per_seed, tokens=None, seconds=None):
    """Rows of a run: per_seed = {seed: [correct, ...]}, question i of every seed has id i."""
    return [dict(id=i, seed=s, correct=c, tokens=tokens(s, i) if tokens else {"a": 1}, latent_steps=6,
                 seconds=seconds(s, i) if seconds else 1.0, f1=float(c))
            for s, cs in per_seed.items() for i, c in enumerate(cs)]


ST = dict(benchmark="gsm8k", method="latent", agents=["a", "b"], seeds=[0, 1, 2], samples=1)


def test_summary_figures_equal_the_figures_by_hand():
    # seeds 0, 1, 2 over the same 4 questions: 2/4, 4/4, 1/4 right
    rows = _rows({0: [1, 1, 0, 0], 1: [1, 1, 1, 1], 2: [1, 0, 0, 0]},
                 tokens=lambda s, i: {"planner": i, "solver": 2},  # question i: i + 2 tokens
                 seconds=lambda s, i: 0.5 * (s + 1))               # seed s: 0.5 (s + 1) s a question
    s = evaluate.summarize(rows, ST, {})
    assert s["per_seed"] == [0.5, 1.0, 0.25]
    # mean over seeds: (0.5 + 1 + 0.25) / 3 = 0.58333
    assert s["accuracy"] == pytest.approx(0.583333, abs=1e-6)
    # sd with ddof = 1 (statistics.stdev): deviations -0.08333, 0.41667, -0.33333; squares sum 0.291667;
    # / (3 - 1) = 0.145833; sqrt = 0.381881   (ddof = 0 would give sqrt(0.291667 / 3) = 0.311805)
    assert s["std"] == pytest.approx(0.381881, abs=1e-6)
    # Wilson over ALL rows: 7 right of 12 -> [0.3195, 0.8067] (see WILSON); over the 4 questions it would differ
    assert s["ci95"] == pytest.approx([0.3195, 0.8067], abs=1e-4)
    assert (s["n"], s["rows"], s["correct"]) == (4, 12, 7)
    # tokens: each seed 2 + 3 + 4 + 5 = 14, three seeds 42, over 12 rows = 3.5 a question
    assert s["mean_tokens"] == pytest.approx(3.5)
    assert s["mean_latent_steps"] == pytest.approx(6.0)
    # seconds: 4 rows of 0.5, 1.0, 1.5 = 2 + 4 + 6 = 12 over 12 rows = 1.0 a question
    assert s["mean_seconds"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(7 / 12)  # 0.58333: f1 is 1 on the 7 right rows, 0 elsewhere
    assert s["metric"] == "accuracy"


def test_accuracy_weighs_every_seed_alike():
    # seed 0: 2 rows, 2 right (1.0); seed 1: 4 rows, 1 right (0.25): mean over seeds (1 + 0.25) / 2 = 0.625,
    # not 3 / 6 = 0.5 pooled; sd = |1 - 0.25| / sqrt(2) = 0.530330
    s = evaluate.summarize(_rows({0: [1, 1], 1: [0, 0, 0, 1]}), dict(ST, seeds=[0, 1]), {})
    assert s["accuracy"] == pytest.approx(0.625) and s["std"] == pytest.approx(0.530330, abs=1e-6)
    one = evaluate.summarize(_rows({0: [1, 0, 1]}), dict(ST, seeds=[0]), {})
    assert one["std"] == 0.0 and one["accuracy"] == pytest.approx(2 / 3)  # one seed: no spread to report


def test_the_comparison_table_prints_the_figures_by_hand(capsys):
    rows = _rows({0: [1, 1, 0, 0], 1: [1, 1, 1, 1], 2: [1, 0, 0, 0]},
                 tokens=lambda s, i: {"planner": i, "solver": 2}, seconds=lambda s, i: 0.5 * (s + 1))
    s = evaluate.summarize(rows, ST, {})
    evaluate.print_table([s])
    head, line = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert head.split() == ["benchmark", "method", "agents", "n", "acc", "±", "sd", "95%", "CI", "tokens", "latent",
                            "s/q"]
    # benchmark, method, agents, n = 4, acc 0.583, sd 0.382, CI [0.32, 0.81], 3.5 tokens, 6 latent steps, 1.00 s
    assert line.split() == ["gsm8k", "latent", "a,b", "4", "0.583", "0.382", "[0.32,", "0.81]", "3.5", "6", "1.00"]


# pass@k. The unbiased estimator (Chen et al. 2021) from n samples of which c are right:
#   pass@k = 1 - C(n - c, k) / C(n, k).
# evaluate.py draws exactly n = k samples per question, so C(n - c, k) = C(k - c, k) is 1 when c = 0 and 0 when
# c >= 1 (fewer than k items to choose k from): pass@3 from 3 samples is 0 for c = 0 and 1 for c = 1, 2, 3.
# A general n > k would need the estimator itself; evaluate.py never draws more than k.
PASS_AT_3 = {(False, False, False): 0.0, (True, False, False): 1.0, (False, True, False): 1.0,
             (False, False, True): 1.0, (True, True, False): 1.0, (False, True, True): 1.0, (True, True, True): 1.0}


def _samples(verdicts):
    it = dict(id=0, question="q", gold="18", kind="math")
    recs = [dict(text=f"s{j}", tokens={"solver": 4 + 2 * j}, written=[f"w{j}"], latent_steps=0, seconds=1.0 + j,
                 continued=False) for j in range(len(verdicts))]
    scored = [(f"p{j}", ok, {"rule": "exact match"}) for j, ok in enumerate(verdicts)]
    return evaluate.make_row(it, recs, scored, "single")


@pytest.mark.parametrize("verdicts", list(PASS_AT_3), ids=["".join("x" if v else "-" for v in k) for k in PASS_AT_3])
def test_pass_at_k_is_the_unbiased_estimator_with_n_equal_to_k(verdicts):
    row = _samples(verdicts)
    n = k = len(verdicts)
    c = sum(verdicts)
    assert 1 - math.comb(n - c, k) / math.comb(n, k) == PASS_AT_3[verdicts]  # the estimator, as derived above
    assert float(row["correct"]) == PASS_AT_3[verdicts]
    assert [x["correct"] for x in row["samples"]] == list(verdicts) and row["prediction"] == "p0"
    # per question: tokens are the mean over the 3 samples, (4 + 6 + 8) / 3 = 6; seconds their sum 1 + 2 + 3 = 6
    assert row["tokens"] == {"solver": pytest.approx(6.0)} and row["seconds"] == pytest.approx(6.0)


def test_pass_at_k_summary_is_the_mean_of_the_per_question_estimates(capsys):
    # four questions with c = 0, 1, 2, 3 right of 3 samples: pass@3 = 0, 1, 1, 1 -> 0.75
    rows = [dict(_samples([j < c for j in range(3)]), id=c, seed=0) for c in range(4)]
    s = evaluate.summarize(rows, dict(ST, seeds=[0], samples=3), {})
    assert s["accuracy"] == pytest.approx(0.75) and s["metric"] == "pass@3"
    evaluate.print_table([s])
    assert "(acc is pass@3)" in capsys.readouterr().out


def test_what_differs_between_seeds(tmp_path, monkeypatch, capsys):
    """Seeds --seed, --seed + 1, ...; each batch is seeded from (seed, first question) as seed * 1_000_003 + position,
    so two seeds draw differently and a rerun draws the same. By hand for --seed 5 --seeds 2, 3 questions in batches
    of 2: seed 5 -> 5_000_015 (questions 0, 1), 5_000_017 (question 2); seed 6 -> 6_000_018, 6_000_020."""
    seen = []

    class Stub:  # answers "\boxed{18}" (question 0's gold) when its batch's torch seed is odd, else "\boxed{1}"
        backbones = [None]

        def run(self, questions, mode, rounds, steps, max_new_tokens, temperature, top_p, final_answer):
            seed = torch.initial_seed()
            seen.append(seed)
            draw = torch.rand(()).item()
            return [dict(text=f"\\boxed{{{18 if seed % 2 else 1}}}", tokens={"solver": 1}, latent_steps=0,
                         seconds=1.0, written=[f"{draw:.6f}"], continued=False) for _ in questions]

    monkeypatch.setattr(evaluate, "build_system", lambda a, method: Stub())
    argv = TINY + ["--limit", "3", "--batch-size", "2", "--seed", "5", "--seeds", "2"]
    assert evaluate.main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert seen == [5_000_015, 5_000_017, 6_000_018, 6_000_020]
    (f,) = (tmp_path / "a").glob("*.jsonl")
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    assert [(r["seed"], r["id"]) for r in rows] == [(5, 0), (5, 1), (5, 2), (6, 0), (6, 1), (6, 2)]
    assert rows[0]["texts"] != rows[3]["texts"]  # same question, other seed: another draw
    summary = json.loads(f.with_name(f.name.replace(".jsonl", ".summary.json")).read_text())
    assert summary["settings"]["seeds"] == [5, 6]
    # seed 5: question 0 right (odd seed), 1 and 2 wrong -> 1/3; seed 6: none right -> 0; mean 1/6;
    # sd = sqrt(((1/3 - 1/6)² + (0 - 1/6)²) / 1) = sqrt(2 / 36) = 0.235702
    assert summary["per_seed"] == pytest.approx([1 / 3, 0.0]) and summary["accuracy"] == pytest.approx(1 / 6)
    assert summary["std"] == pytest.approx(0.235702, abs=1e-6)
    # a batch's 1.0 s is shared by its questions: 0.5, 0.5 (batch of 2), 1.0 (batch of 1); 4 / 6 rows = 0.6667 s
    assert [r["seconds"] for r in rows] == [0.5, 0.5, 1.0, 0.5, 0.5, 1.0]
    assert summary["mean_seconds"] == pytest.approx(2 / 3)
    seen.clear()
    assert evaluate.main(argv + ["--out", str(tmp_path / "b")]) == 0  # a rerun draws the same
    assert [json.loads(l)["texts"] for l in next((tmp_path / "b").glob("*.jsonl")).read_text().splitlines()] == \
        [r["texts"] for r in rows]
    capsys.readouterr()

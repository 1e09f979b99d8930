"""
The evaluation protocols: every setting that decides how a question is answered and scored, in one place.

  quick  (the default of every script)  greedy, 256 new tokens, one seed, r=2, m=8: a CPU-sized look, not the paper's
  paper  (evaluate.py --protocol paper)  the paper's App. B.3: sampling, per-benchmark budgets, 5 seeds, AIME pass@10,
         the "Final Answer:" ending of a cut answer, r=3 (Table 3) and m=32 (the release's default)

Every value below that claims to be the paper's has its source in docs/method.md §9, and tests/test_protocol.py
checks that table against these constants. Explicit flags override each setting (cli.py: default None = the
protocol's).
"""

PAPER_TOKENS = {"math500": 2000, "medqa": 4000, "gpqa_diamond": 4000, "livecodebench": 4000, "mbppplus": 4000,
                "aime24": 16000, "aime25": 16000, "aime26": 16000,
                # the paper is silent on these; docs/method.md §9 gives each choice its reason
                "gsm8k": 2000, "arith2": 2000, "amc23": 16000, "arc_challenge": 4000, "humaneval": 4000,
                "humanevalplus": 4000,
                "mbpp": 4000, "hotpotqa": 4000, "bamboogle": 4000}
PAPER_TEMPERATURE, PAPER_CODE_TEMPERATURE, PAPER_TOP_P = 0.6, 0.2, 0.95
PAPER_SEEDS, PAPER_AIME_SAMPLES = 5, 10          # mean (and sd) over 5 seeds; AIME: pass@10
PAPER_ROUNDS, PAPER_LATENT_STEPS = 3, 32         # r (Table 3), m (the release's default)
SECONDS_PER_TEST = 10.0                          # each code test case (both protocols)
# Paper B.3: a final answer cut at its token budget gets this line appended, and the model writes a short ending
# after it (recursion.write_answer), so a long solution still states an answer instead of scoring as "no answer".
FINAL_ANSWER = "\nFinal Answer:"
# ... with this many more tokens: enough for a stated answer ("The final answer is $\boxed{...}$", MATH500's longest
# golds included); code gets room for a short function, as the release gives its code answers 256.
FINAL_ANSWER_TOKENS, FINAL_ANSWER_CODE_TOKENS = 64, 256

QUICK = dict(max_new_tokens=256, temperature=None, top_p=1.0, samples=1, seeds=1, rounds=2, latent_steps=8,
             final_answer_tokens=0, test_timeout=SECONDS_PER_TEST)
# The quick protocol is greedy (temperature None -> 0), except with --samples k > 1: k greedy answers would be one
# answer k times, so pass@k samples at this temperature (a common choice for pass@k; the paper's protocol sets its own).
SAMPLING_TEMPERATURE = 0.7

# Every random draw of a run is a function of (seed, position): the batch of a training step, its dropout, the
# sampling of an evaluation batch. Seed s and position k draw from s * SEED_STRIDE + k; a prime stride larger than
# any step count or question index, so (s, k) pairs never collide.
SEED_STRIDE = 1_000_003


def seed_of(seed, position):
    return seed * SEED_STRIDE + position


def settings(protocol, benchmark=None, kind=None):
    """Every setting a protocol decides: max_new_tokens, temperature, top_p, samples, seeds, rounds, latent_steps,
    final_answer_tokens, test_timeout (benchmark and kind matter only to the paper's)."""
    if protocol != "paper":
        return dict(QUICK)
    code = kind in ("code", "lcb")
    return dict(max_new_tokens=PAPER_TOKENS[benchmark],
                temperature=PAPER_CODE_TEMPERATURE if code else PAPER_TEMPERATURE, top_p=PAPER_TOP_P,
                samples=PAPER_AIME_SAMPLES if str(benchmark).startswith("aime") else 1, seeds=PAPER_SEEDS,
                rounds=PAPER_ROUNDS, latent_steps=PAPER_LATENT_STEPS,
                final_answer_tokens=FINAL_ANSWER_CODE_TOKENS if code else FINAL_ANSWER_TOKENS,
                test_timeout=SECONDS_PER_TEST)


def pick(args, protocol, name):
    """An explicit flag's value, else the protocol's."""
    value = getattr(args, name, None)
    return value if value is not None else protocol[name]

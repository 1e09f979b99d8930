"""
Mixture-of-Agents (Wang et al. 2024), one of the paper's multi-agent baselines (§5, Table 3), on the System's own
backbones: agents that only ever talk in text, in layers.

    layer 1          every agent (a proposer) answers the question alone
    layers 2..L-1    every proposer answers again, reading all the answers of the layer before
    layer L          the final agent (the aggregator) reads the last layer's answers and writes the answer

An answer-reading prompt (MoA's "aggregate and synthesize", in our words) is a system message that hands over the
numbered answers and asks for one better answer; the user turn is the question, unchanged. The RecursiveMAS paper
does not give MoA's size; the default, 3 layers with every agent proposing, is the MoA paper's main setup (its
README: rounds = layers - 1 proposer layers). Tokens of every agent in every layer count.
"""
import fast
from recursion import Tally, build_inputs, now, write_answer

LAYERS = 3  # the MoA paper's main configuration (3 layers; 6 proposers there, every agent here)
AGGREGATE = ("Several assistants have answered the user's question below; their answers follow. Write one answer of "
             "your own that is better than each of them. Read them critically: some may be wrong or biased. Do not "
             "copy them: give a correct, complete and well-organised reply.\n\nThe answers:")


def synthesis_prompt(backbone, question, answers):
    """A prompt that hands `answers` (the layer before) to an agent; no answers: the question alone."""
    messages = [{"role": "user", "content": question}]
    if answers:
        numbered = "".join(f"\n{k}. {a}" for k, a in enumerate(answers, 1))
        messages.insert(0, {"role": "system", "content": AGGREGATE + numbered})
    return backbone.prompt(messages)


def run(system, questions, layers=LAYERS, final_answer=0, **gen):
    """Answer a batch of questions with Mixture-of-Agents; gen: Backbone.generate's options (max_new_tokens,
    temperature, top_p). Returns one record per question, as System.run does: text, tokens {proposerK /
    aggregator: generated tokens}, latent_steps 0, seconds, written (every text, in order), continued."""
    t0, tally = now(), Tally(len(questions))
    agents = range(len(system.backbones))
    answers = [[] for _ in questions]  # per question: the answers of the layer before
    for layer in range(1, layers):
        said = []
        for i in agents:
            bb = system.backbones[i]
            prompts = [synthesis_prompt(bb, q, answers[b]) for b, q in enumerate(questions)]
            texts, counts = bb.generate(*build_inputs(bb, prompts, {}), decoder=fast.choose(system.fast[i]), **gen)
            said.append(tally.add(f"proposer{i + 1}", (texts, counts)))
        answers = [[texts[b] for texts in said] for b in range(len(questions))]
    bb, last = system.backbones[-1], len(system.backbones) - 1
    prompts = [synthesis_prompt(bb, q, answers[b]) for b, q in enumerate(questions)]
    texts, counts, continued = write_answer(bb, *build_inputs(bb, prompts, {}),
                                            dict(gen, decoder=fast.choose(system.fast[last])), final_answer)
    tally.add("aggregator", (texts, counts))
    return tally.records(texts, now() - t0, continued)

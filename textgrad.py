"""
TextGrad (Yuksekgonul et al. 2024), one of the paper's multi-agent baselines (§5, Table 3), in its "solution
optimisation" setting, on the System's own backbones: the answer itself is the variable, optimised at test time.

    answer_0 = the final agent's answer, asked alone (the single-agent prompt)
    for t in 1..T:
        evaluation = the first agent, an evaluator, criticises answer_{t-1} (the "loss"; it must not solve the problem)
        feedback   = the first agent, from that evaluation, says how the answer should change (the "textual gradient")
        answer_t   = the final agent rewrites the answer from the feedback (the optimiser step), between
                     <IMPROVED_VARIABLE> tags
    the answer scored: the most common of the T + 1 answers' predictions (evaluate.py votes; code: the last one)

Three calls an iteration, as TextGrad's; the prompts keep TextGrad's structure (an evaluator told not to solve, a
critic told not to rewrite, an optimiser told to answer inside tags) in our own words. T = 3 and the vote are the
TextGrad repository's solution-optimisation defaults; the RecursiveMAS paper does not give them. With one agent, it
plays every part. A reply without the tags is taken whole (TextGrad raises an error there).
"""
import re
import fast
from recursion import Tally, build_inputs, now, write_answer

STEPS = 3  # TextGrad's solution optimisation: 3 iterations, then a majority vote over the 4 answers
EVALUATOR = ("You evaluate answers inside an optimisation system. Do not try to solve the problem yourself. Point out "
             "only what may be wrong in the answer: be critical, and consider whether another answer is right.")
EVALUATE = "Here is a question and an answer to it. Find every reason the answer could be wrong."
CRITIC = ("You give feedback that improves a text. Never write a new version of the text itself. If it needs no "
          "change, say that no feedback is needed.")
OPTIMISER = ("You improve a text using feedback, which may be noisy. Reply with the improved text between "
             "<IMPROVED_VARIABLE> and </IMPROVED_VARIABLE>, and nothing else.")
ROLE = "a precise solution to the question, whose last line states the final answer as the question asks"
IMPROVED = re.compile(r"<IMPROVED_VARIABLE>(.*?)(?:</IMPROVED_VARIABLE>|$)", re.S)


def evaluation_prompt(question, answer):
    return f"{EVALUATE}\nQuestion: {question}\nAnswer by the language model: {answer}"


def feedback_prompt(question, answer, evaluation):
    asked = evaluation_prompt(question, answer)
    return (f"The text to improve is {ROLE}.\n\nAn evaluator was asked:\n<LM_INPUT>{asked}"
            f"</LM_INPUT>\nand replied:\n<LM_OUTPUT>{evaluation}</LM_OUTPUT>\n\nHow should the text in <VARIABLE> "
            f"change so that the evaluator's concerns are resolved? Give feedback only.\n<VARIABLE>{answer}</VARIABLE>")


def step_prompt(question, answer, feedback):
    return (f"<ROLE>{ROLE}</ROLE>\n<VARIABLE>{answer}</VARIABLE>\n<CONTEXT>\n<CONVERSATION>{question}</CONVERSATION>\n"
            f"<FEEDBACK>{feedback}</FEEDBACK>\n</CONTEXT>\nImprove the variable using the feedback. Keep the answer "
            f"format the question asks for. Send only the improved variable between <IMPROVED_VARIABLE> and "
            f"</IMPROVED_VARIABLE>.")


def improved(reply, previous):
    """The text between the tags (an unclosed tag: to the end); no tag: the reply whole; an empty reply: the last."""
    m = IMPROVED.search(reply)
    text = (m.group(1) if m else reply).strip()
    return text or previous


def _ask(system, i, system_prompt, users, gen, tally, label):
    """Agent i answers one user message per row (with a system prompt); counted under `label`."""
    bb = system.backbones[i]
    prompts = [bb.prompt(([{"role": "system", "content": system_prompt}] if system_prompt else [])
                         + [{"role": "user", "content": u}]) for u in users]
    said = bb.generate(*build_inputs(bb, prompts, {}), decoder=fast.choose(system.fast[i]), **gen)
    return tally.add(label, said)


def run(system, questions, steps=STEPS, final_answer=0, **gen):
    """Answer a batch of questions with TextGrad; gen: Backbone.generate's options. One record per question, as
    System.run's, plus `candidates`: answer_0 .. answer_T (what evaluate.py votes over)."""
    t0, tally, last = now(), Tally(len(questions)), len(system.backbones) - 1
    bb = system.backbones[last]
    texts, counts, continued = write_answer(bb, *system.inputs(last, questions, 0, {}, alone=True),
                                            dict(gen, decoder=fast.choose(system.fast[last])), final_answer)
    answers = [tally.add("solver", (texts, counts))]
    for t in range(steps):
        current = answers[-1]
        evaluations = _ask(system, 0, EVALUATOR, [evaluation_prompt(q, a) for q, a in zip(questions, current)], gen,
                           tally, "evaluator")
        feedback = _ask(system, 0, CRITIC, [feedback_prompt(q, a, e) for q, a, e in
                                            zip(questions, current, evaluations)], gen, tally, "critic")
        replies = _ask(system, last, OPTIMISER, [step_prompt(q, a, f) for q, a, f in zip(questions, current, feedback)],
                       gen, tally, "optimiser")
        answers.append([improved(r, a) for r, a in zip(replies, current)])
    records = tally.records(answers[-1], now() - t0, continued)
    return [dict(rec, candidates=[a[b] for a in answers]) for b, rec in enumerate(records)]

"""
Roles and patterns: what each agent is told, what it learns, and WHO FEEDS WHOM.

A pattern is a Topology: the agents' roles (the last one writes the answer), the edges within a round (src -> dst,
src's latents or text reach dst in the same round) and the feedback edges across rounds (src -> dst in the next
round). The paper's four patterns are a few lines each below; a new one is a new function in TOPOLOGIES.

A role says what its agent is told (its instructions, where incoming messages sit in its prompt) and which training
field it learns (rows.py).
"""
from dataclasses import dataclass

from errors import UserError
from tools import MAX_CALLS

# The prompt layout of the authors' release: a generic system prompt (the deliberation agents: the tool rules), the
# role's instructions in the user message, and each incoming message at its role's place: before the question for the
# agents that act on what they receive (solver, summarizer, learner, tool-caller, and every agent's feedback slot
# except the planner's), after it for the planner's feedback and the critic's plan. Wording is ours; the layout is the
# release's (see docs/method.md).
SYSTEM_PROMPT = "You are a helpful assistant."
STEPS = "Write it as numbered steps:\nStep 1: ...\nStep 2: ...\n..."
BOXED = "Solve it and put the final answer in \\boxed{}."
# The deliberation pattern's tools (tools.py runs them), as both of its agents are told.
TOOL_RULES = ("To run Python, write <python>code that prints the result</python>; to search documents, write "
              "<search>query</search>. The result comes back as <result>...</result>.")


@dataclass
class Role:
    intro: str             # who the agent is and what it should do
    closing: str           # the last line of its user message
    slots_first: bool      # incoming messages before the question (else after it)
    targets: tuple         # training fields it learns to produce, first present wins (rows.py)
    system: str = SYSTEM_PROMPT
    domain: str = None     # stage 1 trains it on the rows of this domain only (mixture specialists); None: every row


ROLES = {
    "planner": Role("You are the planner in a team of agents. Make a plan for the question below; do not solve it.",
                    STEPS, False, ("plan",)),
    "critic": Role("You are the critic in a team of agents. Check the planner's plan for the question below and "
                   "write a corrected, clearer plan.", STEPS, False, ("refined_plan",)),
    "solver": Role("You are the solver in a team of agents. Use the plan you are given.", BOXED, True, ("answer",)),
    "math": Role("You are the mathematics specialist in a team of agents.", "Give your view of the question.",
                 True, ("hie_math_expert", "plan"), domain="math"),
    "code": Role("You are the programming specialist in a team of agents.", "Give your view of the question.",
                 True, ("hie_code_expert", "plan"), domain="code"),
    "science": Role("You are the science specialist in a team of agents.", "Give your view of the question.",
                    True, ("hie_science_expert", "plan"), domain="science"),
    "summarizer": Role("You are the summarizer in a team of agents. Weigh the specialists' views.", BOXED, True,
                       ("answer",)),
    "expert": Role("You are the expert in a team of agents. Give a short plan the learner can follow; do not give "
                   "the final answer.", STEPS, True, ("refined_plan", "plan")),
    "learner": Role("You are the learner in a team of agents. Follow the expert's plan where it fits the question.",
                    BOXED, True, ("answer",)),
    # Both deliberation agents get the tool rules as their system prompt (paper App. E; the release gives the reflector
    # and the tool-caller the same one). The reflector thinks in latents and never writes text, so it cannot call a
    # tool itself: it is told what the tool-caller can do, to think about which calls would settle the question.
    "reflector": Role("You are the reflector in a team of agents: think about what must be computed or looked up.",
                      "Think it through.", True, ("deliberation_reflector", "refined_plan", "answer"),
                      system=f"You work with a tool-caller, who may call tools. Its rules: {TOOL_RULES} It makes at "
                             f"most {MAX_CALLS} calls. You do not call them yourself: think about which calls would "
                             "settle the question, and what each should compute or look up."),
    "toolcaller": Role("You are the tool-caller in a team of agents. Use the reflector's thoughts.", BOXED, True,
                       ("deliberation_toolcaller", "answer"),
                       system=f"You may call tools. {TOOL_RULES} Put the final answer in \\boxed{{}}.\n"
                              "Example. Question: What is 2**20?\n<python>print(2**20)</python>\n<result>1048576"
                              "</result>\nThe answer is \\boxed{1048576}."),
    # the relay pattern (scripts/capacity.py): the smallest channel, one agent reads, the other writes
    "sender": Role("You are the sender in a team of agents. Pass the message below on to the next agent, exactly.",
                   "Repeat the message.", False, ("final",)),
    "receiver": Role("You are the receiver in a team of agents.", "Write the message in \\boxed{}.", True,
                     ("answer",)),
}
LABELS = {"planner": "Plan from the planner", "sender": "Thoughts of the sender",
          "critic": "Corrected plan from the critic",
          "solver": "Feedback from the solver's previous round", "summarizer": "Feedback from the summarizer's "
          "previous round", "learner": "Feedback from the learner's previous round",
          "toolcaller": "Feedback from the tool-caller's previous round", "expert": "Plan from the expert",
          "reflector": "Thoughts of the reflector"}


@dataclass
class Topology:
    roles: list     # agent i plays roles[i]; the LAST agent writes the answer
    edges: list     # (src, dst) within a round, src < dst: src's latents go to dst in the same round
    feedback: list  # (src, dst) across rounds: src's latents reach dst in the next round (not after the last)


def _unique(roles):
    return [r if roles.count(r) == 1 else f"{r}{i}" for i, r in enumerate(roles)]


# The four patterns of the paper, side by side: only who feeds whom differs.
def sequential(n):
    """planner -> [critic ->] solver, solver -> planner as feedback. n=1: one agent looping on its own thoughts."""
    roles = {1: ["solver"], 2: ["planner", "solver"]}.get(n) or ["planner"] + ["critic"] * (n - 2) + ["solver"]
    return Topology(_unique(roles), [(i, i + 1) for i in range(n - 1)], [(n - 1, 0)])


def mixture(n):
    """specialists think in parallel -> summarizer reads every stream (one slot each); feedback to each specialist."""
    if n < 2:
        raise UserError("the mixture pattern needs at least 2 agents: specialists then a summarizer")
    roles = _unique([("math", "code", "science")[i % 3] for i in range(n - 1)]) + ["summarizer"]
    return Topology(roles, [(i, n - 1) for i in range(n - 1)], [(n - 1, i) for i in range(n - 1)])


def distillation(n):
    """a (larger) expert thinks -> a (smaller) learner answers; feedback learner -> expert."""
    if n != 2:
        raise UserError("the distillation pattern takes exactly 2 agents: expert,learner")
    return Topology(["expert", "learner"], [(0, 1)], [(1, 0)])


def deliberation(n):
    """a reflector thinks -> a tool-caller answers, calling <python>/<search> tools; feedback tool-caller -> reflector."""
    if n != 2:
        raise UserError("the deliberation pattern takes exactly 2 agents: reflector,toolcaller")
    return Topology(["reflector", "toolcaller"], [(0, 1)], [(1, 0)])


def debate(n):
    """two planners think side by side -> a solver reads both (one slot each); feedback solver -> each planner."""
    if n != 3:
        raise UserError("the debate pattern takes exactly 3 agents: planner,planner,solver")
    return Topology(_unique(["planner", "planner", "solver"]), [(0, 2), (1, 2)], [(2, 0), (2, 1)])


def relay(n):
    """a sender reads a message -> a receiver writes it (scripts/capacity.py: what the latents carry)."""
    if n != 2:
        raise UserError("the relay pattern takes exactly 2 agents: sender,receiver")
    return Topology(["sender", "receiver"], [(0, 1)], [(1, 0)])


TOPOLOGIES = {"sequential": sequential, "mixture": mixture, "distillation": distillation, "deliberation": deliberation,
              "debate": debate, "relay": relay}

PRESETS = {  # the paper's lineups (docs/method.md §7): --agents paper-light etc.
    "paper-light": ("sequential", "qwen,llama,qwen-math"),
    "paper-scaled": ("sequential", "gemma,llama-3b,qwen3.5-4b"),
    "paper-mixture": ("mixture", "deepseek,qwen-coder,mistral,qwen3.5-2b"),
    "paper-distillation": ("distillation", "qwen3.5-9b,qwen3.5-4b"),
    "paper-deliberation": ("deliberation", "qwen3.5-4b,qwen3.5-4b"),
}


def topology(pattern, n):
    """The Topology of `pattern` for n agents; a UserError naming the patterns there are."""
    if pattern not in TOPOLOGIES:
        raise UserError(f"unknown pattern '{pattern}'; use one of {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[pattern](n)


def user_message(role, question, inbox, alone=False):
    """An agent's user message: its role's instructions, the question, and each incoming message as 'label:\ntext'
    (inbox: [(label, text)]), before or after the question as the role says. alone: the question and the closing
    line only (the single-agent baseline)."""
    asked = [f"Question:\n{question}"]
    messages = [f"{label}:\n{text}" for label, text in inbox]
    body = asked if alone else [role.intro] + (messages + asked if role.slots_first else asked + messages)
    return "\n\n".join(body + [role.closing])


def expand_agents(agents, pattern):
    """'paper-mixture' -> (['deepseek', ...], 'mixture'); 'a,b' -> (['a', 'b'], pattern)."""
    if agents in PRESETS:
        return PRESETS[agents][1].split(","), PRESETS[agents][0]
    names = [a.strip() for a in agents.split(",") if a.strip()]
    if not names:
        raise UserError("--agents is empty; pass e.g. --agents smollm,smollm")
    return names, pattern


def base_role(role):
    return role.rstrip("0123456789")


def role_of(role):
    """The Role of an agent's role name ('critic2' -> critic); unknown names act as solvers."""
    return ROLES.get(base_role(role), ROLES["solver"])


def role_targets(role):
    """The training fields an agent of this role learns to produce, in order of preference."""
    return role_of(role).targets


def slot_label(src_role):
    base = base_role(src_role)
    return LABELS.get(base, f"Thoughts of the {base} specialist" if base in ("math", "code", "science") else
                      f"Thoughts of the {base}")


def slot_name(src_role, feedback):
    return ("feedback_" if feedback else "from_") + src_role

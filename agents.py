"""
Ask the looped multi-agent system one question (recursion.System), in latent mode (RecursiveMAS), text mode
(Recursive-TextMAS) or as the final agent alone:

    python agents.py --agents smollm,smollm --mode latent --rounds 2 --latent-steps 8 --question "What is 12*7?"

Prints the answer, every tool call, and what it cost: generated tokens per agent, latent steps, seconds.
"""
import json
import sys

import torch

import cli
from errors import UserError
from protocol import QUICK, pick
from recursion import system_from_args


def parser():
    p = cli.Parser(description="Ask the looped multi-agent system one question.",
                   epilog='example: python agents.py --agents smollm,smollm --mode latent --rounds 2 '
                          '--latent-steps 8 --question "What is 12*7?"')
    cli.add_answering_args(p)
    p.add_argument("--mode", default="latent", choices=["latent", "text", "single"],
                   help="latent: RecursiveMAS; text: Recursive-TextMAS; single: the final agent alone")
    p.add_argument("--question", default="What is 12*7?", type=cli.text, help="the question to answer")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def ask(a):
    if not a.question.strip():
        raise UserError("empty question; pass a non-empty --question")
    torch.manual_seed(a.seed)
    system = system_from_args(a)
    setting = {k: pick(a, QUICK, k) for k in ("rounds", "latent_steps", "max_new_tokens", "top_p")}
    rec = system.run([a.question], a.mode, temperature=pick(a, QUICK, "temperature") or 0.0, **setting)[0]
    rec = dict(rec, mode=a.mode, agents=system.agent_names, rounds=setting["rounds"],
               total_tokens=sum(rec["tokens"].values()))
    if a.json:
        print(json.dumps(rec))
        return
    print(rec["text"])
    for c in rec.get("tool_calls", []):
        print(f"--- tool {c['tool']}: {c['input'][:60]!r} -> {c['result'][:60]!r}")
    print(f"--- {a.mode}: {rec['total_tokens']} generated tokens {rec['tokens']}, {rec['latent_steps']} latent steps, "
          f"{rec['seconds']:.2f} s")


def main(argv=None):
    return cli.main(parser(), ask, argv)


if __name__ == "__main__":
    sys.exit(main())

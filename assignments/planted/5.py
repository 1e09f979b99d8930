# Planted wrong solution for assignment 5: the outer loss cuts the graph after each earlier round (detached
# rollouts), so the answer's gradient never flows back through round 1. Its value is unchanged.
# loses: gradient through every round
# replaces: losses.outer_loss
def outer_loss(system, rows, args):
    from recursion import rollout
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]

    def make(i, embeds, mask, round_):
        thoughts = rollout(system.backbones[i], system.inner[system.roles[i]], embeds, mask, args.latent_steps)
        return thoughts if round_ == args.rounds - 1 else thoughts.detach()
    finals = system.latent_pass(questions, args.rounds, args.latent_steps, make_latents=make)
    bb = system.backbones[-1]
    if args.supervise == "final" or len(finals) == 1:
        return answer_ce(bb, *finals[-1], answers, args.max_target_tokens)
    ces = [answer_ce(bb, e, m, answers, args.max_target_tokens) for e, m in finals]
    return ces[-1] + 0.1 * torch.stack(ces[:-1]).mean()

# Planted wrong solution for assignment 4: the inner loss targets token t (the state's own token) instead of t+1.
# loses: the loss value | the target is the next token
# replaces: losses.inner_loss
def inner_loss(system, rows, max_tokens):
    total = 0.0
    for i, (role, bb) in enumerate(zip(system.roles, system.backbones)):
        embeds, mask = build_inputs(bb, [stage1_prompt(system, i, r) for r in rows], {})
        T = embeds.shape[1]
        texts = [target_text(r, role_targets(role)) for r in rows]
        full, full_mask, ids, tmask = append_targets(bb, embeds, mask, texts, max_tokens)
        with torch.no_grad():
            hidden, _ = bb.forward(full, full_mask)
            target = bb.embed(ids)
        pred = system.inner[role](hidden[:, T:])  # the state over token t, compared with token t itself
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)
        total = total + ((1 - cos) * tmask).sum() / tmask.sum()
    return total / len(system.roles)

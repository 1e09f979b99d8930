# Planted wrong solution for assignment 2: position ids that forget the offset (the cached past and the padding).
# loses: position ids | KV-cached rollout equals the recompute reference | batch invariance and the first thought
# replaces: model.positions
def positions(mask, T):
    return torch.arange(T, device=mask.device).expand(mask.shape[0], T)

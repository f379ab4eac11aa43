"""Active pair selection: which of more candidate pairs than the label budget humans judge first.

`uncertainty` follows arXiv 2402.09401 (active preference learning for LLMs):
score each candidate with the current policy's implicit reward margin against
its reference, beta * (log-ratio of a - log-ratio of b), and give human attention
to the pairs whose margin is nearest zero, i.e. where the policy cannot tell which
completion it prefers. A share of every batch (the campaign's
selection_random_share, 20% by default) is still drawn uniformly from the rest,
so estimates made from the labels (win rates, the gate) keep an unbiased part.
`random` draws the whole batch uniformly: today's behaviour, made explicit.

Django-free: `choose` takes margins and returns the picks; labeling.services.pairs_select stores them.
"""

import random
from collections.abc import Mapping

UNCERTAINTY = "uncertainty"
RANDOM = "random"


def choose(
    margins: Mapping[int, float | None], *, budget: int, mode: str, random_share: float, seed: int = 0
) -> dict[int, str]:
    """The candidates picked for this batch, each with why (UNCERTAINTY or RANDOM); at most `budget` of them.

    A candidate without a margin (None) is never picked for uncertainty, only at random; when fewer are
    scored than the uncertainty part of the budget, the rest of the budget is drawn at random.
    """
    if mode not in (UNCERTAINTY, RANDOM):
        raise ValueError(f"mode must be {UNCERTAINTY} or {RANDOM}")
    if budget < 0 or not 0 <= random_share <= 1:
        raise ValueError("budget must be at least 0 and random_share between 0 and 1")
    rng = random.Random(seed)
    ids = sorted(margins)
    budget = min(budget, len(ids))
    n_random = budget if mode == RANDOM else round(budget * random_share)
    scored = [i for i in ids if margins[i] is not None]
    # Ties in |margin| (a policy equal to its reference scores every pair 0) are broken at random, not by age.
    rng.shuffle(scored)
    least_sure = sorted(scored, key=lambda i: abs(margins[i]))[: budget - n_random]
    picks = dict.fromkeys(least_sure, UNCERTAINTY)
    rest = [i for i in ids if i not in picks]
    picks.update(dict.fromkeys(rng.sample(rest, min(budget - len(picks), len(rest))), RANDOM))
    return picks

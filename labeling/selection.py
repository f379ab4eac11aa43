"""Active pair selection: which of more candidate pairs than the label budget humans judge first.

`uncertainty` follows arXiv 2402.09401 (active preference learning for LLMs):
score each candidate with the current policy's implicit reward margin against
its reference, beta * (log-ratio of a - log-ratio of b), and give human attention
to the pairs where the policy cannot tell which completion it prefers. Under the
Bradley-Terry model that DPO fits, sigma(margin) is the policy's probability that a
wins, and a decisive answer tells the binary entropy H(sigma(margin)) about the
pair. A tie (or "both bad") tells nothing about the direction and trains nothing,
and ties are not spread evenly: a policy that cannot tell two answers apart is
often looking at two answers that humans cannot tell apart either (in the label
efficiency bench, plain least-margin selection filled its batches with the oracle's
ties). So a pair's score is its expected information, P(decisive | |margin|) times
H(sigma(margin)), with P(decisive | |margin|) fitted (`decisive_curve`) on the
campaign's past judgments, their pairs scored by the same policy and each judgment
read as its pair's settled truth (training.services.pairs_score_and_select). Until there are
enough of them, P is taken as constant, and the score orders pairs by |margin|
alone. A share of every batch (the campaign's
selection_random_share, 20% by default) is still drawn uniformly from the rest,
so estimates made from the labels (win rates, the gate) keep an unbiased part.
`random` draws the whole batch uniformly: today's behaviour, made explicit.

Django-free: `choose` takes margins and returns the picks; labeling.services.pairs_select stores them.
"""

import math
import random
from collections.abc import Callable, Iterable, Mapping

import numpy as np

UNCERTAINTY = "uncertainty"
RANDOM = "random"
# Judgments needed, with both outcomes among them, before P(decisive | |margin|) is fitted rather than constant.
MIN_DECISIVE_OBSERVATIONS = 30


def binary_entropy(margin: float) -> float:
    """H(sigma(margin)) in nats: what a decisive answer on the pair tells, under the policy's own odds."""
    p = 1.0 / (1.0 + math.exp(-abs(margin)))
    return -(p * math.log(p) + (1 - p) * math.log1p(-p)) if p < 1.0 else 0.0


def decisive_curve(
    observations: Iterable[tuple[float, bool]], *, min_observations: int = MIN_DECISIVE_OBSERVATIONS
) -> Callable[[float], float] | None:
    """P(a judgment picks a side | the pair's |margin|): a logistic fit in |margin| on (margin, decisive)
    observations, one per judgment. None (take P as constant) with fewer than `min_observations`, or when
    they all have one outcome.

    Newton's method on the log-likelihood, with a small ridge so that a margin that
    separates the outcomes perfectly still gives a finite, steep curve.
    """
    rows = [(abs(m), bool(d)) for m, d in observations]
    outcomes = {d for _, d in rows}
    if len(rows) < min_observations or len(outcomes) < 2:
        return None
    x = np.array([m for m, _ in rows])
    scale = float(x.std()) or 1.0
    features = np.column_stack([np.ones_like(x), x / scale])
    y = np.array([float(d) for _, d in rows])
    weights, ridge = np.zeros(2), 1e-3 * len(rows)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(features @ weights)))
        gradient = features.T @ (y - p) - ridge * weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights += step
        if np.abs(step).max() < 1e-8:
            break
    intercept, slope = float(weights[0]), float(weights[1]) / scale
    return lambda margin: 1.0 / (1.0 + math.exp(-(intercept + slope * abs(margin))))


def choose(
    margins: Mapping[int, float | None],
    *,
    budget: int,
    mode: str,
    random_share: float,
    seed: int = 0,
    decisive: Callable[[float], float] | None = None,
) -> dict[int, str]:
    """The candidates picked for this batch, each with why (UNCERTAINTY or RANDOM); at most `budget` of them.

    Uncertainty picks the highest expected information, decisive(|margin|) * H(sigma(margin)); without
    `decisive` (decisive_curve's None), the smallest |margin|. A candidate without a margin (None) is never
    picked for uncertainty, only at random; when fewer are scored than the uncertainty part of the budget,
    the rest of the budget is drawn at random.
    """
    if mode not in (UNCERTAINTY, RANDOM):
        raise ValueError(f"mode must be {UNCERTAINTY} or {RANDOM}")
    if budget < 0 or not 0 <= random_share <= 1:
        raise ValueError("budget must be at least 0 and random_share between 0 and 1")
    # One random order of the candidates, the same in both modes: it breaks ties in information and draws
    # the random share. Where the policy knows nothing (its first model scores every pair 0), uncertainty
    # therefore picks exactly the pairs random does, so the two modes differ only by what margins tell.
    order = sorted(margins)
    random.Random(seed).shuffle(order)
    rank = {i: k for k, i in enumerate(order)}
    budget = min(budget, len(order))
    n_random = budget if mode == RANDOM else round(budget * random_share)
    p_decisive = decisive or (lambda margin: 1.0)
    information = {i: p_decisive(m) * binary_entropy(m) for i, m in margins.items() if m is not None}
    most_informative = sorted(information, key=lambda i: (-information[i], rank[i]))[: budget - n_random]
    picks = dict.fromkeys(most_informative, UNCERTAINTY)
    picks.update(dict.fromkeys([i for i in order if i not in picks][: budget - len(picks)], RANDOM))
    return picks

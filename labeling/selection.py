"""Active pair selection: which of more candidate pairs than the label budget humans judge first.

`uncertainty` follows active preference learning for LLMs (Muldrew et al., arXiv 2402.08114):
score each candidate with the current policy's implicit reward margin against
its reference, beta * (log-ratio of a - log-ratio of b), and give human attention
to the pairs where the policy cannot tell which completion it prefers. Under the
Bradley-Terry model that DPO fits, sigma(margin) is the policy's probability that a
wins, and a decisive answer tells the binary entropy H(sigma(margin)) about the
pair. A tie (or "both bad") tells nothing about the direction and trains nothing,
and ties are not spread evenly: a policy that cannot tell two answers apart is
often looking at two answers that humans cannot tell apart either (in the label
efficiency bench, plain least-margin selection filled its batches with the oracle's
ties). So a pair's score is its expected information, P(decisive | |margin|, entropy)
times H(sigma(margin)), where entropy is the policy's predictive entropy at the
prompt (the paper's other acquisition signal, estimated from the pair's two samples:
training.scoring). P is fitted (`decisive_curve`) on the campaign's past judgments,
their pairs scored by the same policy and each judgment read as its pair's settled
truth (training.services.pairs_score_and_select). Until there are enough of them,
P is taken as constant and pairs go by |margin|, then by entropy: a first model is
its own reference and scores every margin 0, and it then asks about the prompts it
is least sure how to answer (on the tiny model's samples, the pairs with the higher
entropy were the decisive ones under each of four built-in oracles: AUC 0.70 to 0.87).
A share of every batch (the campaign's selection_random_share, 20% by default) is
still drawn uniformly from the rest, so estimates made from the labels (win rates,
the gate) keep an unbiased part.
`certainty` is that paper's best acquisition, its hybrid: among the prompts where the policy's predictive
entropy is highest (the higher half of the scored candidates), the pairs whose margin is largest, where the
implicit preference model is most sure. A confident answer is worth most when it is wrong: the paper found
these pairs surface the policy's confidently wrong preferences, and they are seldom ties (two completions a
policy tells apart are completions humans tell apart). Its first batch, every margin 0, goes by entropy
alone, as uncertainty's does. The same random share is kept.
`random` draws the whole batch uniformly: today's behaviour, made explicit.

Django-free: `choose` takes the scores and returns the picks; labeling.services.pairs_select stores them.
"""

import math
import random
from collections.abc import Callable, Iterable, Mapping

import numpy as np

UNCERTAINTY = "uncertainty"
CERTAINTY = "certainty"
RANDOM = "random"
MODES = (RANDOM, UNCERTAINTY, CERTAINTY)
# certainty: the share of the scored candidates, those with the highest entropy, that its picks come from.
CERTAINTY_ENTROPY_SHARE = 0.5
# Judgments needed, with both outcomes among them, before P(decisive | |margin|) is fitted rather than constant.
MIN_DECISIVE_OBSERVATIONS = 30


def _sigmoid(z: float) -> float:
    """1 / (1 + e^-z), without overflow for a score far outside the fitted range."""
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def binary_entropy(margin: float) -> float:
    """H(sigma(margin)) in nats: what a decisive answer on the pair tells, under the policy's own odds."""
    p = 1.0 / (1.0 + math.exp(-abs(margin)))
    return -(p * math.log(p) + (1 - p) * math.log1p(-p)) if p < 1.0 else 0.0


def decisive_curve(
    observations: Iterable[tuple[float, float, bool]], *, min_observations: int = MIN_DECISIVE_OBSERVATIONS
) -> Callable[[float, float], float] | None:
    """P(a judgment picks a side | the pair's |margin|, the policy's entropy at its prompt): a logistic fit in
    both on (margin, entropy, decisive) observations, one per judgment. None (take P as constant) with fewer
    than `min_observations`, or when they all have one outcome. An observation with a score that is not finite
    (a log-probability of -inf or NaN) is left out.

    Newton's method on the log-likelihood of standardized features, with a small ridge so that a feature that
    separates the outcomes perfectly still gives a finite, steep curve, and one that never varies (every margin
    0 under a first model) gets no weight.
    """
    rows = [(abs(m), h, bool(d)) for m, h, d in observations if math.isfinite(m) and math.isfinite(h)]
    if len(rows) < min_observations or len({d for _, _, d in rows}) < 2:
        return None
    x = np.array([(m, h) for m, h, _ in rows])
    center, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    features = np.column_stack([np.ones(len(rows)), (x - center) / scale])
    y = np.array([float(d) for _, _, d in rows])
    weights, ridge = np.zeros(3), 1e-3 * len(rows) * np.eye(3)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(features @ weights)))
        gradient = features.T @ (y - p) - ridge @ weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge
        step = np.linalg.solve(hessian, gradient)
        weights += step
        if np.abs(step).max() < 1e-8:
            break
    intercept, (w_margin, w_entropy) = float(weights[0]), (weights[1:] / scale).tolist()
    intercept -= w_margin * float(center[0]) + w_entropy * float(center[1])
    return lambda margin, entropy: _sigmoid(intercept + w_margin * abs(margin) + w_entropy * entropy)


def choose(
    margins: Mapping[int, float | None],
    *,
    budget: int,
    mode: str,
    random_share: float,
    seed: int = 0,
    entropies: Mapping[int, float] | None = None,
    decisive: Callable[[float, float], float] | None = None,
) -> dict[int, str]:
    """The candidates picked for this batch, each with why (the mode, or RANDOM for the random share), in the
    order to serve them; at most `budget` of them.

    Uncertainty picks the highest expected information, decisive(margin, entropy) * H(sigma(margin)); without
    `decisive` (decisive_curve's None), the smallest |margin|, and among equal margins the highest entropy
    (`entropies`, per candidate: the policy's predictive entropy at its prompt; 0 where not given). Certainty
    picks, among the CERTAINTY_ENTROPY_SHARE of the scored candidates with the highest entropy (never fewer
    than it picks), the largest |margin|, and among equal margins the highest entropy; `decisive` is not used.
    A candidate without a margin (None), or with a margin or entropy that is not finite, is never picked by
    its score, only at random; when fewer are scored than the scored part of the budget, the rest of the
    budget is drawn at random.

    The order: the most informative first, so that a batch humans leave unfinished (a round that starts on the
    first new labels) has the pairs that tell most; the random picks spread evenly through it, so that its
    unbiased part is as large a share of what gets judged as of the batch.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if budget < 0 or not 0 <= random_share <= 1:
        raise ValueError("budget must be at least 0 and random_share between 0 and 1")
    # One random order of the candidates, the same in both modes: it breaks the last ties and draws the
    # random share, so that two campaigns on one seed differ only by what the scores tell.
    order = sorted(margins)
    random.Random(seed).shuffle(order)
    rank = {i: k for k, i in enumerate(order)}
    budget = min(budget, len(order))
    n_random = budget if mode == RANDOM else round(budget * random_share)
    entropy = entropies or {}
    # A score that is not finite (a log-probability of -inf or NaN) says nothing: such a pair is unscored.
    scored = [
        i for i, m in margins.items() if m is not None and math.isfinite(m) and math.isfinite(entropy.get(i, 0.0))
    ]
    n_by_score = budget - n_random
    if mode == CERTAINTY:
        by_entropy = sorted(scored, key=lambda i: (-entropy.get(i, 0.0), rank[i]))
        scored = by_entropy[: max(n_by_score, math.ceil(len(scored) * CERTAINTY_ENTROPY_SHARE))]
        key = lambda i: (-abs(margins[i]), -entropy.get(i, 0.0), rank[i])  # noqa: E731
    elif decisive:
        information = {i: decisive(margins[i], entropy.get(i, 0.0)) * binary_entropy(margins[i]) for i in scored}
        key = lambda i: (-information[i], rank[i])  # noqa: E731
    else:
        key = lambda i: (-binary_entropy(margins[i]), -entropy.get(i, 0.0), rank[i])  # noqa: E731
    most_informative = sorted(scored, key=key)[:n_by_score]
    chosen = set(most_informative)
    drawn = [i for i in order if i not in chosen][: budget - len(most_informative)]
    # Serving order: the k-th of n informative picks at k/n of the way, the k-th random one at (k + 1/2)/n'.
    spread = [(k / len(most_informative), i, mode) for k, i in enumerate(most_informative)]
    spread += [((k + 0.5) / len(drawn), i, RANDOM) for k, i in enumerate(drawn)]
    return {i: why for _, i, why in sorted(spread, key=lambda slot: (slot[0], slot[2] == RANDOM))}

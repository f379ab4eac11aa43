"""Annotator reliability and per-pair posteriors: a Dawid-Skene EM over pairwise judgments.

The model (Dawid & Skene 1979, "Maximum likelihood estimation of observer
error-rates using the EM algorithm"), adapted to pairs shown in a random order:

- each comparison has a latent true class: a is better, b is better, or neither
  (a tie; a "both bad" answer is read as neither, since it prefers no side);
- each annotator has a 3x3 confusion matrix over the *shown sides*: P(answer
  left / right / neither | the truly better completion was on the left / right /
  neither is). Because the order is random per judgment, a position bias is part
  of the confusion: an annotator who always clicks left answers "left" whatever
  the truth, so the matrix's right-hand diagonal entry collapses and their
  reliability comes out near a coin flip, which a per-answer score cannot see;
- gold comparisons have their truth clamped to the gold answer, so they anchor
  the scale (who is right is then not decided by the majority alone).

The core (`dawid_skene`) is Django-free numpy; `campaign_reliability` loads a
campaign's judgments and calls it.

Reliability is the annotator's expected probability of a correct answer on the
pairs they judged that are evidence of it (shared with another annotator, or gold;
an annotator with none gets no estimate), under the fitted model. Its interval is a 95% Beta posterior
interval on that many expected-correct answers out of their judgment count
(Beta(1 + correct, 1 + wrong), Jeffreys would differ little): it treats the
latent truths as known, so it is narrower than a bootstrap over pairs would be.

Decisive accuracy is the same on the judgments whose truth is a side (weighted by
P(a or b truly better)): how often they pick the better completion when there is
one, which is what training reads. Where most pairs are truly ties, an annotator
who flips two in five decisive answers still answers most pairs right (a tie
flipped is a tie), so their reliability sits near everyone's; their decisive
accuracy does not.
"""

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

# Latent truth per comparison.
A_BETTER, B_BETTER, NEITHER = 0, 1, 2
# Answers as shown: the truth maps onto these through the judgment's order.
LEFT, RIGHT, NO_SIDE = 0, 1, 2
CLASSES = 3
# labeling.models.Choice's values, spelled out: this core stays Django-free.
_TRUTH_OF_CHOICE = {"a": A_BETTER, "b": B_BETTER, "tie": NEITHER, "both_bad": NEITHER}
# Dirichlet pseudo-counts of a confusion row: one extra on the diagonal (an annotator is presumed better
# than chance until the data says otherwise, which keeps EM off the label-swapped solution), and a small
# floor everywhere so no answer is ever impossible.
_DIAGONAL_PRIOR = 1.0
_FLOOR_PRIOR = 0.01
# Below one expected decisive judgment, a decisive accuracy is the prior's, not theirs: none is given.
_MIN_DECISIVE = 1.0


@dataclass(frozen=True)
class Observation:
    annotator: Hashable
    item: Hashable
    choice: str  # "a", "b", "tie" or "both_bad"
    left_is_a: bool


@dataclass(frozen=True)
class AnnotatorReliability:
    judgments: int  # those the estimate stands on: on pairs shared with another annotator, or gold
    reliability: float  # expected probability that an answer of theirs is correct
    low: float  # 95% Beta posterior interval of it
    high: float
    # P(left | truly right) - P(right | truly left): above zero, they favour the left side.
    left_bias: float
    # The same estimate on the judgments whose truth is a side; None when (almost) none is.
    decisive_judgments: float  # expected count: the sum of P(a or b truly better) over their evidence
    decisive: float | None
    decisive_low: float | None
    decisive_high: float | None


@dataclass(frozen=True)
class ReliabilityResult:
    annotators: dict[Hashable, AnnotatorReliability]
    posteriors: dict[Hashable, tuple[float, float, float]]  # P(a better), P(b better), P(neither)
    iterations: int
    converged: bool

    def winner_posterior(self, item: Hashable, side: str) -> float | None:
        """P(the completion on `side` ("a" or "b") is truly the better one), None for an item never judged."""
        posterior = self.posteriors.get(item)
        if posterior is None:
            return None
        return posterior[A_BETTER if side == "a" else B_BETTER]

    def answer_posterior(self, item: Hashable, choice: str) -> float | None:
        """P(the answer `choice` ("a", "b", "tie" or "both_bad") is the item's truth), None for an item never judged."""
        posterior = self.posteriors.get(item)
        return None if posterior is None else posterior[_TRUTH_OF_CHOICE[choice]]

    def likelier_side(self, item: Hashable, default: str) -> str:
        """The side ("a" or "b") more probably the better one; `default` for an item never judged or an even posterior."""
        posterior = self.posteriors.get(item)
        if posterior is None or posterior[A_BETTER] == posterior[B_BETTER]:
            return default
        return "a" if posterior[A_BETTER] > posterior[B_BETTER] else "b"

    def truly_decisive(self, item: Hashable, default: bool) -> bool:
        """Whether a side is more probably the better one than neither; `default` for an item never judged."""
        posterior = self.posteriors.get(item)
        if posterior is None:
            return default
        return posterior[A_BETTER] + posterior[B_BETTER] > posterior[NEITHER]


def _shown(truth: np.ndarray, left_is_a: np.ndarray) -> np.ndarray:
    """The shown side (LEFT, RIGHT, NO_SIDE) of each truth for judgments shown in order `left_is_a`."""
    swapped = np.where(truth == A_BETTER, RIGHT, np.where(truth == B_BETTER, LEFT, NO_SIDE))
    return np.where(left_is_a, truth, swapped)


def dawid_skene(
    observations: Iterable[Observation],
    *,
    gold: Mapping[Hashable, str] | None = None,
    # EM's convergence is linear: 1,000-10,000 judgments took 250-270 iterations (bench/quality_report.py).
    max_iterations: int = 500,
    tolerance: float = 1e-6,
) -> ReliabilityResult:
    """Fit the model; `gold` maps items to their gold choice (clamped truth)."""
    from scipy.stats import beta  # the interval only; imported here like labeling.quality does

    observations = list(observations)
    gold = dict(gold or {})
    annotators = list(dict.fromkeys(o.annotator for o in observations))
    items = list(dict.fromkeys(o.item for o in observations))
    if not observations:
        return ReliabilityResult(annotators={}, posteriors={}, iterations=0, converged=True)
    a_index = {a: i for i, a in enumerate(annotators)}
    i_index = {item: i for i, item in enumerate(items)}
    who = np.array([a_index[o.annotator] for o in observations])
    which = np.array([i_index[o.item] for o in observations])
    left_is_a = np.array([o.left_is_a for o in observations], dtype=bool)
    voted = np.array([_TRUTH_OF_CHOICE[o.choice] for o in observations])  # the answer, as a truth
    answer = _shown(voted, left_is_a)
    # shown[k, t]: the side on which judgment k would have seen truth t.
    shown = np.stack([_shown(np.full(len(observations), t), left_is_a) for t in range(CLASSES)], axis=1)
    cells = [(who * CLASSES + shown[:, t]) * CLASSES + answer for t in range(CLASSES)]

    clamped = np.zeros((len(items), CLASSES))
    is_gold = np.zeros(len(items), dtype=bool)
    for item, choice in gold.items():
        if item in i_index and choice in _TRUTH_OF_CHOICE:
            is_gold[i_index[item]] = True
            clamped[i_index[item], _TRUTH_OF_CHOICE[choice]] = 1.0

    # Start from the (smoothed) vote shares: the majority's answer, which EM then reweighs by who gave it.
    q = np.full((len(items), CLASSES), 0.1)
    np.add.at(q, (which, voted), 1.0)
    q /= q.sum(axis=1, keepdims=True)
    q[is_gold] = clamped[is_gold]

    prior_counts = np.full((CLASSES, CLASSES), _FLOOR_PRIOR) + _DIAGONAL_PRIOR * np.eye(CLASSES)
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        # M-step: confusion matrices (MAP under the Dirichlet prior) and the class prior.
        # bincount over flat (annotator, shown truth, answer) cells: np.add.at is ~20x slower at 1e5 judgments.
        flat_counts = sum(
            np.bincount(cells[t], weights=q[which, t], minlength=len(annotators) * CLASSES * CLASSES)
            for t in range(CLASSES)
        )
        counts = prior_counts + flat_counts.reshape(len(annotators), CLASSES, CLASSES)
        confusion = counts / counts.sum(axis=2, keepdims=True)
        class_prior = (q.sum(axis=0) + 1.0) / (len(items) + CLASSES)
        # E-step: each item's truth given every answer it got.
        log_q = np.broadcast_to(np.log(class_prior), (len(items), CLASSES)).copy()
        log_confusion = np.log(confusion)
        for t in range(CLASSES):
            log_q[:, t] += np.bincount(which, weights=log_confusion[who, shown[:, t], answer], minlength=len(items))
        log_q -= log_q.max(axis=1, keepdims=True)
        new_q = np.exp(log_q)
        new_q /= new_q.sum(axis=1, keepdims=True)
        new_q[is_gold] = clamped[is_gold]
        change = float(np.abs(new_q - q).max())
        q = new_q
        if change < tolerance:
            converged = True
            break

    # Expected correctness of each judgment: sum over truths of P(truth) * P(answering it right | truth, order).
    right_if = [q[which, t] * confusion[who, shown[:, t], shown[:, t]] for t in range(CLASSES)]
    correct = sum(right_if)
    decisive_correct = right_if[A_BETTER] + right_if[B_BETTER]
    decisive_weight = q[which, A_BETTER] + q[which, B_BETTER]
    # A pair only its own annotator judged, and not gold, says nothing of them: its posterior is their own
    # answer, so it would count as right. Only pairs shared with another annotator, or gold, are evidence.
    judges = np.bincount(np.unique(which * len(annotators) + who) // len(annotators), minlength=len(items))
    evidence = (judges[which] > 1) | is_gold[which]
    result: dict[Hashable, AnnotatorReliability] = {}
    for index, annotator in enumerate(annotators):
        mine = (who == index) & evidence
        n = int(mine.sum())
        if n == 0:
            continue  # no estimate rather than the prior's
        right = float(correct[mine].sum())
        low, high = beta.ppf([0.025, 0.975], 1 + right, 1 + n - right)
        n_decisive = float(decisive_weight[mine].sum())
        decisive = decisive_low = decisive_high = None
        if n_decisive >= _MIN_DECISIVE:
            right_decisive = float(decisive_correct[mine].sum())
            decisive = right_decisive / n_decisive
            decisive_low, decisive_high = (
                float(x) for x in beta.ppf([0.025, 0.975], 1 + right_decisive, 1 + n_decisive - right_decisive)
            )
        result[annotator] = AnnotatorReliability(
            judgments=n,
            reliability=right / n,
            low=float(low),
            high=float(high),
            left_bias=float(confusion[index, RIGHT, LEFT] - confusion[index, LEFT, RIGHT]),
            decisive_judgments=n_decisive,
            decisive=decisive,
            decisive_low=decisive_low,
            decisive_high=decisive_high,
        )
    posteriors = {item: tuple(float(p) for p in q[i]) for i, item in enumerate(items)}
    return ReliabilityResult(annotators=result, posteriors=posteriors, iterations=iterations, converged=converged)


"""The promotion gate: does the held-out evidence say the candidate beats the incumbent?

Django-free (plain numbers in, a decision out), so it is tested without a database.

The evidence is paired: the worker scores the candidate and the incumbent on the
same held-out human pairs, each by its implicit DPO reward against one common
base (the root of the policy chain), so the per-pair difference cancels how hard
each pair is. A pair scores 1 when the policy's margin favours the human's
choice, 0 when it favours the other completion, 1/2 when it has no preference
(a policy equal to the base has margin 0 on every pair: it scores 1/2, chance).

Length is controlled for in the spirit of length-controlled AlpacaEval (Dubois
et al. 2024): the margins are regressed on the pair's length difference
(chosen minus rejected, in tokens), and the part the length explains is taken
out before scoring. A candidate that only learned "longer is better" keeps its
raw accuracy on a length-biased held-out set, but its length-controlled margins
are noise, so its lower bound stays below chance.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z_95 = 1.959964  # two-sided 95%: each lower bound alone is wrong at most 2.5% of the time
# Two forward passes of the same weights agree to float32 round-off, not exactly
# (an unmerged zero LoRA update adds 0.0 in a different order): margins this small are "no preference".
TIE_EPS = 1e-5


class Verdict:
    PROMOTE = "promote"
    REJECT = "reject"
    NOT_EVALUATED = "not_evaluated"


def pair_scores(margins: np.ndarray) -> np.ndarray:
    """1 where the margin favours the human's choice, 0 against it, 1/2 for no preference."""
    return np.where(np.abs(margins) <= TIE_EPS, 0.5, (margins > 0).astype(float))


@dataclass(frozen=True)
class LengthControl:
    slope: float  # margin per token of length difference
    explained: float  # R^2: the share of the margins' variance the length difference explains
    margins: np.ndarray  # the margins with the length part taken out

    @classmethod
    def fit(cls, margins: np.ndarray, length_diff: np.ndarray) -> "LengthControl":
        centred = length_diff - length_diff.mean()
        spread = float(centred @ centred)
        if len(margins) < 3 or spread == 0.0:
            return cls(slope=0.0, explained=0.0, margins=margins)
        slope = float(centred @ (margins - margins.mean())) / spread
        # Remove slope * length_diff (not the centred one): at equal lengths the prediction is the intercept,
        # so a margin that only tracks length ends up near zero, whatever the held-out set's mean length gap.
        adjusted = margins - slope * length_diff
        total = float(((margins - margins.mean()) ** 2).sum())
        explained = 1.0 - float(((adjusted - adjusted.mean()) ** 2).sum()) / total if total > 0 else 0.0
        return cls(slope=slope, explained=max(0.0, explained), margins=adjusted)


def mean_lower_bound(values: np.ndarray, z: float = Z_95) -> float | None:
    """Normal lower bound of a mean; with no spread (every pair alike) it is the mean itself; None (no bound)
    under two values, whose spread is unknown."""
    n = len(values)
    if n < 2:
        return None
    return float(values.mean() - z * values.std(ddof=1) / math.sqrt(n))


def wilson_lower_bound(values: np.ndarray, z: float = Z_95) -> float:
    """Wilson score lower bound of a proportion (half-scores count as half a success)."""
    n = len(values)
    if n == 0:
        return 0.0
    p = float(values.mean())
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half)


@dataclass(frozen=True)
class GateDecision:
    verdict: str
    reason: str
    pairs: int
    min_pairs: int
    threshold: float
    tolerance: float
    kl: float | None
    kl_budget: float | None
    candidate_accuracy: float | None = None  # raw: sign of the margin
    incumbent_accuracy: float | None = None
    candidate_lc_accuracy: float | None = None  # length-controlled
    incumbent_lc_accuracy: float | None = None
    candidate_lower: float | None = None  # Wilson lower bound of the candidate's length-controlled accuracy
    difference: float | None = None  # mean paired (candidate - incumbent) length-controlled score
    difference_lower: float | None = None
    length_explained: float | None = None  # R^2 of the candidate's margins on the length difference
    length_slope: float | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.PROMOTE

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def decide(
    *,
    candidate_margins: Sequence[float],
    incumbent_margins: Sequence[float],
    length_diff: Sequence[float],
    kl: float | None,
    min_pairs: int,
    threshold: float,
    tolerance: float,
    kl_budget: float | None,
    kept_step: int | None = None,
) -> GateDecision:
    """Promote when, on at least `min_pairs` held-out pairs, the candidate's length-controlled accuracy has
    a lower bound above `threshold`, the paired lower bound of (candidate - incumbent) is above
    `-tolerance`, and the candidate's KL to its reference is within `kl_budget` (None: no budget).

    `kept_step` is the training step the candidate's weights are from (None: not reported); 0 means the
    worker's KL checks sent it back to its start, so it is its incumbent and is never promoted."""
    candidate = np.asarray(candidate_margins, dtype=float)
    incumbent = np.asarray(incumbent_margins, dtype=float)
    lengths = np.asarray(length_diff, dtype=float)
    if not len(candidate) == len(incumbent) == len(lengths):
        raise ValueError("candidate, incumbent and length differences must cover the same pairs")
    n = len(candidate)
    common = {"pairs": n, "min_pairs": min_pairs, "threshold": threshold, "tolerance": tolerance, "kl": kl,
              "kl_budget": kl_budget}  # fmt: skip
    if n < min_pairs:
        return GateDecision(
            verdict=Verdict.NOT_EVALUATED,
            reason=f"not evaluated: {n} held-out pairs, at least {min_pairs} needed for a decision",
            **common,
        )
    # The incumbent's margins are fitted on their own: each policy's length habit is its own.
    control, incumbent_control = LengthControl.fit(candidate, lengths), LengthControl.fit(incumbent, lengths)
    mine, theirs = pair_scores(control.margins), pair_scores(incumbent_control.margins)
    difference = mine - theirs
    figures = {
        "candidate_accuracy": float(pair_scores(candidate).mean()),
        "incumbent_accuracy": float(pair_scores(incumbent).mean()),
        "candidate_lc_accuracy": float(mine.mean()),
        "incumbent_lc_accuracy": float(theirs.mean()),
        "candidate_lower": wilson_lower_bound(mine),
        "difference": float(difference.mean()),
        "difference_lower": mean_lower_bound(difference),
        "length_explained": control.explained,
        "length_slope": control.slope,
    }

    def verdict(passed: bool, reason: str) -> GateDecision:
        return GateDecision(verdict=Verdict.PROMOTE if passed else Verdict.REJECT, reason=reason, **common, **figures)

    if kept_step == 0:
        return verdict(False, "no training step stayed within the KL budget: the candidate is its starting policy")
    if kl_budget is not None and (kl is None or kl > kl_budget):
        shown = "unmeasured" if kl is None else f"{kl:.2f} nats"
        return verdict(False, f"KL to the reference {shown} exceeds the budget of {kl_budget:.2f} nats")
    lower, accuracy = figures["candidate_lower"], figures["candidate_lc_accuracy"]
    if lower <= threshold:
        return verdict(
            False,
            f"length-controlled held-out accuracy {accuracy:.3f} (n={n}) has a 95% lower bound of {lower:.3f}, "
            f"not above {threshold:.3f}",
        )
    low_diff = figures["difference_lower"]
    if low_diff is None:
        return verdict(False, f"one held-out pair (n={n}) bounds no paired difference to the incumbent")
    if low_diff < -tolerance:
        return verdict(
            False,
            f"paired difference to the incumbent {figures['difference']:+.3f} (n={n}) has a 95% lower bound of "
            f"{low_diff:+.3f}, below -{tolerance:.3f}",
        )
    return verdict(
        True,
        f"length-controlled held-out accuracy {accuracy:.3f} (lower bound {lower:.3f}, n={n}); paired difference "
        f"to the incumbent {figures['difference']:+.3f} (lower bound {low_diff:+.3f})",
    )

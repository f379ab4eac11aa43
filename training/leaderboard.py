"""Every policy of a campaign on one scale: a Bradley-Terry fit of human A/B judgments, as Chatbot Arena
publishes it (an Elo-like scale, 95% intervals from a bootstrap over judgments).

A judgment of an A/B pair (its two completions from different policies) is one game. "a" or "b" is a win;
"tie" and "both bad" are half a win each (Chatbot Arena counts its "tie (both bad)" as a tie too).
The fit is a few lines of Newton's method on the log-likelihood with a tiny ridge term: numpy only, and the
ridge keeps the strengths finite when a policy has won (or lost) every game or the graph of games is split.
"""

from dataclasses import asdict, dataclass

import numpy as np

from labeling.models import Campaign, Choice, JudgmentSource
from training import selectors

SCALE = 400 / np.log(10)  # Elo points per unit of BT strength: 400 points is 10:1 odds
ANCHOR_RATING = 1000.0
BOOTSTRAP_ROUNDS = 500
_RIDGE = 1e-4
_SCORE = {Choice.A: 1.0, Choice.B: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: 0.5}


def bt_fit(
    winners: np.ndarray,
    losers: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    *,
    players: int,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Bradley-Terry strengths (natural log-odds units, mean zero) of `players` from games: winners[k]
    against losers[k], scoring scores[k] in [0, 1] for winners[k], weights[k] times. Newton's method from
    `start` (zeros by default; a bootstrap starts from the point estimate, a few steps away)."""
    theta = np.zeros(players) if start is None else start.copy()
    for _ in range(200):
        p = 1 / (1 + np.exp(theta[losers] - theta[winners]))
        residual = weights * (scores - p)
        gradient = np.bincount(winners, residual, players) - np.bincount(losers, residual, players) - _RIDGE * theta
        w = weights * p * (1 - p)
        hessian = np.diag(np.bincount(winners, w, players) + np.bincount(losers, w, players) + _RIDGE)
        np.add.at(hessian, (winners, losers), -w)
        np.add.at(hessian, (losers, winners), -w)
        # Clipped: where a policy won (almost) every game the curvature is tiny and a full step overshoots.
        step = np.clip(np.linalg.solve(hessian, gradient), -2.0, 2.0)
        theta += step
        if np.abs(step).max() < 1e-9:
            break
    return theta - theta.mean()


@dataclass(frozen=True)
class Rating:
    version_id: int
    name: str
    rating: float
    lower: float  # 95% bootstrap interval
    upper: float
    games: int  # human A/B judgments this policy took part in
    wins: float  # ties count half

    def as_dict(self) -> dict:
        return asdict(self)


def ratings(
    games: list[tuple[int, int, str]],
    *,
    anchor: int | None = None,
    bootstrap: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> dict[int, tuple[float, float, float]]:
    """{player: (rating, lower, upper)} on the Elo-like scale, `anchor` (default: the first player seen) at 1000.

    `games` are (player_a, player_b, choice). The interval is the 2.5th to 97.5th percentile of the ratings
    refitted on `bootstrap` resamples (with replacement) of the games.
    """
    if not games:
        return {}
    ids = sorted({p for a, b, _ in games for p in (a, b)})
    index = {player: i for i, player in enumerate(ids)}
    # Games grouped by (a, b, score): a fit and a resample cost the number of groups, not of judgments.
    keys = [(index[a], index[b], _SCORE[choice]) for a, b, choice in games]
    groups, counts = np.unique(np.array(keys), axis=0, return_counts=True)
    a, b, score = groups[:, 0].astype(int), groups[:, 1].astype(int), groups[:, 2]
    anchor_index = index[anchor if anchor in index else games[0][0]]

    def fit(weights: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        return bt_fit(a, b, score, weights.astype(float), players=len(ids), start=start)

    def elo(theta: np.ndarray) -> np.ndarray:
        return ANCHOR_RATING + SCALE * (theta - theta[anchor_index])

    theta = fit(counts)
    point = elo(theta)
    rng = np.random.default_rng(seed)
    # Resampling the judgments with replacement is a multinomial draw over the groups.
    samples = np.array(
        [elo(fit(rng.multinomial(len(games), counts / len(games)), start=theta)) for _ in range(bootstrap)]
    )
    lower, upper = np.percentile(samples, [2.5, 97.5], axis=0) if bootstrap else (point, point)
    return {player: (float(point[i]), float(lower[i]), float(upper[i])) for player, i in index.items()}


def campaign_leaderboard(*, campaign: Campaign, sources: tuple[str, ...] = (JudgmentSource.HUMAN,)) -> dict:
    """Every policy version of the campaign, rated from its A/B judgments of `sources` (human only by default),
    anchored at 1000 on the campaign's first policy (round 0) when it has played (else on the oldest that
    has). Policies without A/B games are listed unrated."""
    games = selectors.ab_games(campaign=campaign, sources=sources)
    versions = selectors.campaign_versions(campaign=campaign)
    players = {p for a, b, _ in games for p in (a, b)}
    # Round 0, the root of the policy chain, when it has played; else the oldest policy that has.
    roots = [selectors.version_root(version=versions[0])] if versions else []
    anchor = next((v.pk for v in [*roots, *versions] if v.pk in players), None)
    rated = ratings(games, anchor=anchor)
    played: dict[int, int] = {}
    won: dict[int, float] = {}
    for a, b, choice in games:
        for player, score in ((a, _SCORE[choice]), (b, 1 - _SCORE[choice])):
            played[player] = played.get(player, 0) + 1
            won[player] = won.get(player, 0.0) + score
    rows = [
        Rating(
            version_id=v.pk,
            name=v.name,
            rating=round(rated[v.pk][0], 1),
            lower=round(rated[v.pk][1], 1),
            upper=round(rated[v.pk][2], 1),
            games=played[v.pk],
            wins=won[v.pk],
        )
        for v in versions
        if v.pk in rated
    ]
    rows.sort(key=lambda r: -r.rating)
    return {
        "anchor": None if anchor is None else {"version_id": anchor, "rating": ANCHOR_RATING},
        "judgments": len(games),
        "sources": list(sources),
        "ties": "tie and both-bad judgments count as half a win for each side",
        "bootstrap_rounds": BOOTSTRAP_ROUNDS,
        "ratings": [r.as_dict() for r in rows],
        "unrated": [{"version_id": v.pk, "name": v.name} for v in versions if v.pk not in rated],
    }

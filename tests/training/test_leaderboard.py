"""The Bradley-Terry leaderboard: the fit recovers planted strengths, the bootstrap covers them, and only
human A/B judgments count."""

import numpy as np
import pytest

from generation.models import ModelVersion
from labeling.models import Split
from training import leaderboard

PLANTED = {1: 0.0, 2: 0.6, 3: 1.2, 4: -0.5}  # log-odds strengths; player 1 is the anchor


def planted_games(*, seed: int, per_pair: int) -> list[tuple[int, int, str]]:
    rng = np.random.default_rng(seed)
    games = []
    players = sorted(PLANTED)
    for i in players:
        for j in players:
            if i >= j:
                continue
            p_i = 1 / (1 + np.exp(PLANTED[j] - PLANTED[i]))
            for _ in range(per_pair):
                choice = "a" if rng.random() < p_i else "b"
                # Either policy may be side a: the fit must not care.
                games.append((i, j, choice) if rng.random() < 0.5 else (j, i, "b" if choice == "a" else "a"))
    return games


def truth(player: int) -> float:
    return leaderboard.ANCHOR_RATING + leaderboard.SCALE * (PLANTED[player] - PLANTED[1])


def test_fit_recovers_planted_strengths_on_the_elo_scale():
    rated = leaderboard.ratings(planted_games(seed=0, per_pair=2000), anchor=1, bootstrap=0)

    assert rated[1] == (1000.0, 1000.0, 1000.0)
    for player in PLANTED:
        assert abs(rated[player][0] - truth(player)) < 15, (player, rated[player][0], truth(player))


def test_bootstrap_intervals_contain_the_truth_about_95_percent_of_the_time():
    covered = []
    for seed in range(12):
        rated = leaderboard.ratings(planted_games(seed=seed, per_pair=60), anchor=1, bootstrap=200, seed=seed)
        for player in (2, 3, 4):
            rating, lower, upper = rated[player]
            assert lower < rating < upper
            covered.append(lower <= truth(player) <= upper)
    assert sum(covered) / len(covered) >= 0.85, covered


def test_a_policy_that_won_every_game_gets_a_finite_rating_above_the_other():
    rated = leaderboard.ratings([(1, 2, "b")] * 5, anchor=1, bootstrap=50)

    assert np.isfinite(rated[2][0]) and rated[2][0] > 1000 and rated[2][1] <= rated[2][0] <= rated[2][2]


def test_ties_and_both_bad_count_half_a_win_each():
    rated = leaderboard.ratings([(1, 2, "tie"), (1, 2, "both_bad"), (1, 2, "a"), (2, 1, "a")], anchor=1, bootstrap=0)

    assert rated[2][0] == pytest.approx(1000.0, abs=1e-6)


@pytest.fixture
def later_policy(db, tiny_policy) -> ModelVersion:
    return ModelVersion.objects.create(name="round-1", base_path=tiny_policy.base_path, parent=tiny_policy)


@pytest.mark.django_db
def test_campaign_leaderboard_counts_human_ab_judgments_only(campaign, pairs, tiny_policy, later_policy):
    for i in range(6):  # the later policy wins 5 of 6 human games
        pairs.pair(votes=["b" if i else "a"], policy_b=later_policy, text=f"ab {i}", split=Split.HELDOUT)
    # None of these may move the ratings: scripted and imported votes, and pairs from a single policy.
    for i in range(20):
        pairs.pair(votes=["a"], sources=["simulated"], policy_b=later_policy, text=f"sim {i}")
        pairs.pair(votes=["a"], sources=["imported"], policy_b=later_policy, text=f"imp {i}")
        pairs.pair(votes=["a", "b", "tie"], text=f"single {i}")

    board = leaderboard.campaign_leaderboard(campaign=campaign)

    assert board["judgments"] == 6 and board["anchor"] == {"version_id": tiny_policy.pk, "rating": 1000.0}
    top, base = board["ratings"]
    assert (top["version_id"], top["games"], top["wins"]) == (later_policy.pk, 6, 5.0)
    assert (base["version_id"], base["rating"], base["wins"]) == (tiny_policy.pk, 1000.0, 1.0)
    assert top["lower"] < top["rating"] < top["upper"] and top["rating"] > 1000


@pytest.mark.django_db
def test_policies_without_ab_judgments_are_listed_unrated(campaign, pairs, tiny_policy, later_policy):
    pairs.pair(votes=["a"], text="single")

    board = leaderboard.campaign_leaderboard(campaign=campaign)

    assert board["ratings"] == [] and board["anchor"] is None
    assert board["unrated"] == [{"version_id": tiny_policy.pk, "name": tiny_policy.name}]


@pytest.mark.django_db
def test_without_games_of_round_0_the_oldest_policy_that_played_is_the_anchor(
    campaign, pairs, tiny_policy, later_policy
):
    latest = ModelVersion.objects.create(name="round-2", base_path=tiny_policy.base_path, parent=later_policy)
    pairs.pair(votes=["a"], text="single")  # round 0 sampled, but has no A/B game
    ab = type(pairs)(campaign=campaign, policy=later_policy)
    for i in range(3):
        ab.pair(votes=["b"], policy_b=latest, text=f"ab {i}")

    board = leaderboard.campaign_leaderboard(campaign=campaign)

    assert board["anchor"] == {"version_id": later_policy.pk, "rating": 1000.0}
    assert [r["name"] for r in board["ratings"]] == ["round-2", "round-1"]
    assert board["unrated"] == [{"version_id": tiny_policy.pk, "name": tiny_policy.name}]

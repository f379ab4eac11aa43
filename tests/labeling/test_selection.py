"""Active pair selection: which candidates humans judge first, stored per comparison and served first."""

import math
import random

import pytest
from django.urls import reverse

from labeling import selection, services
from labeling.models import Comparison, PairSelection
from tests.labeling.factories import make_pairs


def test_uncertainty_picks_the_smallest_margins_and_keeps_a_random_share():
    margins = {i: (i - 10.3) / 4 for i in range(40)}  # |margin| smallest around i = 10, no ties

    picks = selection.choose(margins, budget=10, mode=selection.UNCERTAINTY, random_share=0.2, seed=1)

    uncertain = sorted(i for i, why in picks.items() if why == selection.UNCERTAINTY)
    randoms = [i for i, why in picks.items() if why == selection.RANDOM]
    assert len(picks) == 10 and len(randoms) == 2
    assert uncertain == sorted(sorted(margins, key=lambda i: abs(margins[i]))[:8])
    assert not set(randoms) & set(uncertain)
    assert picks == selection.choose(margins, budget=10, mode=selection.UNCERTAINTY, random_share=0.2, seed=1)


def test_random_mode_ignores_margins_and_draws_the_whole_budget_uniformly():
    margins = {i: 0.0 if i < 5 else 9.0 for i in range(100)}

    picks = selection.choose(margins, budget=20, mode=selection.RANDOM, random_share=0.2, seed=0)

    assert len(picks) == 20 and set(picks.values()) == {selection.RANDOM}
    assert len(set(picks) - set(range(5))) > 10  # not the five least-sure ones


def test_among_equal_margins_uncertainty_asks_where_the_policy_is_least_sure_how_to_answer():
    # A first model scores every margin 0; its entropy at each prompt still tells them apart.
    zeros = {i: 0.0 for i in range(60)}
    entropies = {i: (i * 37) % 60 / 10 for i in range(60)}  # a permutation of 0.0 .. 5.9

    picks = selection.choose(
        zeros, budget=15, mode=selection.UNCERTAINTY, random_share=0.2, seed=7, entropies=entropies
    )

    uncertain = [i for i, why in picks.items() if why == selection.UNCERTAINTY]
    assert sorted(entropies[i] for i in uncertain) == [4.8, 4.9, 5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9]
    assert sorted(picks.values()).count(selection.RANDOM) == 3


def test_certainty_picks_the_largest_margins_among_the_prompts_the_policy_is_least_sure_how_to_answer():
    # Entropy falls with i; |margin| is largest at the low-entropy end, so the pool matters.
    margins = {i: (-1) ** i * i / 10 for i in range(40)}
    entropies = {i: 5.0 - i / 10 for i in range(40)}

    picks = selection.choose(
        margins, budget=10, mode=selection.CERTAINTY, random_share=0.2, seed=3, entropies=entropies
    )

    sure = [i for i, why in picks.items() if why == selection.CERTAINTY]
    assert sure == [19, 18, 17, 16, 15, 14, 13, 12]  # the higher-entropy half (0-19), largest |margin| first
    randoms = [i for i, why in picks.items() if why == selection.RANDOM]
    assert len(randoms) == 2 and not set(randoms) & set(sure)
    # Uncertainty, on the same scores, asks about the other end of that half.
    least_sure = selection.choose(margins, budget=10, mode=selection.UNCERTAINTY, random_share=0.2, seed=3)
    assert sorted(i for i, why in least_sure.items() if why == selection.UNCERTAINTY) == list(range(8))


def test_a_first_model_picks_the_same_batch_by_certainty_as_by_uncertainty():
    # Every margin 0: both modes go by entropy alone, as do their random shares.
    zeros = {i: 0.0 for i in range(60)}
    entropies = {i: (i * 37) % 60 / 10 for i in range(60)}

    sure = selection.choose(zeros, budget=15, mode=selection.CERTAINTY, random_share=0.2, seed=7, entropies=entropies)
    unsure = selection.choose(zeros, budget=15, mode=selection.UNCERTAINTY, random_share=0.2, seed=7, entropies=entropies)

    assert list(sure) == list(unsure)
    assert [why for why in sure.values() if why != selection.RANDOM] == [selection.CERTAINTY] * 12


def test_an_unknown_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="random, uncertainty, certainty"):
        selection.choose({1: 0.0}, budget=1, mode="surest", random_share=0.2)


def test_a_campaign_offers_every_mode_selection_chooses_by_and_no_other():
    assert PairSelection.values == list(selection.MODES)


def test_with_nothing_to_go_on_uncertainty_picks_what_random_picks():
    # Equal margins and no entropy: uncertainty picks the very pairs random does on the same seed (the same
    # positions among the candidates, whatever their ids), not merely as many.
    zeros = {i: 0.0 for i in range(60)}
    offset = {i + 1000: 0.0 for i in range(60)}  # the same candidates in another campaign

    uncertain = selection.choose(zeros, budget=15, mode=selection.UNCERTAINTY, random_share=0.2, seed=7)
    randoms = selection.choose(zeros, budget=15, mode=selection.RANDOM, random_share=0.2, seed=7)

    assert set(uncertain) == set(randoms) and len(randoms) == 15
    assert sorted(uncertain.values()).count(selection.RANDOM) == 3
    assert {i + 1000 for i in randoms} == set(selection.choose(offset, budget=15, mode=selection.RANDOM, random_share=0.2, seed=7))
    assert set(randoms) != set(selection.choose(zeros, budget=15, mode=selection.RANDOM, random_share=0.2, seed=8))


def test_unscored_candidates_are_only_picked_at_random_and_fill_the_budget():
    margins = {1: None, 2: 0.5, 3: None}

    picks = selection.choose(margins, budget=2, mode=selection.UNCERTAINTY, random_share=0.0)
    assert picks[2] == selection.UNCERTAINTY and len(picks) == 2  # the budget is filled at random
    assert [why for pk, why in picks.items() if pk != 2] == [selection.RANDOM]
    assert set(selection.choose(margins, budget=10, mode=selection.UNCERTAINTY, random_share=0.5)) == {1, 2, 3}
    with pytest.raises(ValueError):
        selection.choose(margins, budget=1, mode="greedy", random_share=0.2)


def test_scores_that_are_not_finite_count_as_unscored():
    # A log-probability of -inf (or NaN) would give an infinite entropy or a NaN margin: it must not top the batch.
    margins = {1: math.nan, 2: 0.0, 3: 0.5, 4: 0.0, 5: -math.inf}
    entropies = {1: 3.0, 2: math.inf, 3: 1.0, 4: 2.0, 5: 1.0}

    picks = selection.choose(margins, budget=2, mode=selection.UNCERTAINTY, random_share=0.0, entropies=entropies)

    assert list(picks.items()) == [(4, selection.UNCERTAINTY), (3, selection.UNCERTAINTY)]
    observations = [(0.1 * (k % 10), 2.0 + k % 7, k % 3 == 0) for k in range(60)]
    broken = observations + [(math.nan, 1.0, True), (0.2, math.inf, False), (-math.inf, 2.0, True)]
    curve, fitted = selection.decisive_curve(observations), selection.decisive_curve(broken)
    assert fitted(0.3, 4.0) == curve(0.3, 4.0) and math.isfinite(fitted(0.3, 4.0))


@pytest.mark.django_db
def test_picked_pairs_store_their_scores_and_are_served_most_informative_first(campaign, alice):
    campaign.pair_selection = PairSelection.UNCERTAINTY
    campaign.selection_random_share = 0.0
    campaign.save()
    pairs = make_pairs(campaign, 6)
    margins = {p.pk: m for p, m in zip(pairs, [3.0, -2.0, 1.5, -0.2, -4.0, 0.01])}

    entropies = {p.pk: 2.0 + k for k, p in enumerate(pairs)}

    picks = services.pairs_select(campaign=campaign, margins=margins, entropies=entropies, budget=2)

    assert list(picks.items()) == [(pairs[5].pk, "uncertainty"), (pairs[3].pk, "uncertainty")]
    stored = {
        c.pk: (c.policy_margin, c.policy_entropy, c.selected_by, c.selection_rank) for c in Comparison.objects.all()
    }
    assert stored[pairs[5].pk] == (0.01, 7.0, "uncertainty", 2)
    assert stored[pairs[3].pk] == (-0.2, 5.0, "uncertainty", 1)
    assert stored[pairs[0].pk] == (3.0, 2.0, "", 0)
    first = services.assignment_next(campaign=campaign, annotator=alice)
    after = services.assignment_next(campaign=campaign, annotator=alice, after_id=first.pk)
    # The least sure pair first although it is the newer of the two, then the other pick, ahead of pairs 0-2.
    assert [first.comparison_id, after.comparison_id] == [pairs[5].pk, pairs[3].pk]


def test_a_batch_is_ordered_by_score_with_its_random_share_spread_through_it():
    margins = {i: 0.1 * i for i in range(40)}  # the smaller the id, the less sure the policy

    picks = selection.choose(margins, budget=10, mode=selection.UNCERTAINTY, random_share=0.2, seed=4)

    uncertain = [i for i, why in picks.items() if why == selection.UNCERTAINTY]
    assert uncertain == list(range(8))  # least sure first
    # 8 informative picks at 0, 1/8, ..., 7/8 of the batch, 2 random ones at 1/4 and 3/4: neither left at the end.
    assert [k for k, why in enumerate(picks.values()) if why == selection.RANDOM] == [3, 8]


@pytest.mark.django_db
def test_admin_lists_why_a_pair_was_picked_and_its_scores(client, admin_user, campaign):
    pairs = make_pairs(campaign, 2)
    margins, entropies = {pairs[0].pk: -0.123456, pairs[1].pk: 2.5}, {pairs[0].pk: 4.75, pairs[1].pk: 1.0}
    services.pairs_select(campaign=campaign, margins=margins, entropies=entropies, budget=1)
    client.force_login(admin_user)

    listing = client.get(reverse("admin:labeling_comparison_changelist")).content.decode()
    detail = client.get(reverse("admin:labeling_comparison_change", args=[pairs[0].pk])).content.decode()

    assert "Policy margin" in listing and "-0.123456" in listing
    assert "Selected by" in listing and "random" in listing
    assert "Policy entropy" in listing and "4.75" in listing
    assert "-0.123456" in detail and "4.75" in detail


def test_decisive_curve_recovers_a_planted_rate_and_waits_for_both_outcomes():
    rng = random.Random(3)
    planted = lambda m, h: 1 / (1 + math.exp(4.5 - 3 * abs(m) - 0.5 * h))  # noqa: E731
    scores = [(rng.uniform(-1.5, 1.5), rng.uniform(2.0, 10.0)) for _ in range(4000)]
    curve = selection.decisive_curve((m, h, rng.random() < planted(m, h)) for m, h in scores)

    for m, h in ((0.0, 3.0), (0.5, 6.0), (-1.0, 9.0), (0.2, 8.0)):
        assert curve(m, h) == pytest.approx(planted(m, h), abs=0.05)
    assert selection.decisive_curve([(0.1, 1.0, True), (0.9, 1.0, False)] * 14) is None  # 28 judgments: too few
    assert selection.decisive_curve([(m, h, False) for m, h in scores]) is None  # all ties: nothing to fit
    # Under a first model every margin is 0: the curve is then one of the entropy alone.
    flat = selection.decisive_curve((0.0, h, rng.random() < planted(0.0, h)) for _, h in scores)
    assert flat(0.0, 4.0) < flat(0.0, 8.0) and flat(0.0, 8.0) == pytest.approx(planted(0.0, 8.0), abs=0.05)
    assert flat(0.0, 1e4) == 1.0 and flat(0.0, -1e4) == 0.0  # far outside the fitted range: no overflow


def test_uncertainty_weighs_each_pair_by_how_often_answers_pick_a_side():
    margins = {i: (i - 20) / 10 for i in range(41)}  # -2.0 .. 2.0
    rarely_decisive_near_zero = lambda m, h: 0.05 if abs(m) < 0.5 else 0.9  # noqa: E731

    least_sure = selection.choose(margins, budget=10, mode=selection.UNCERTAINTY, random_share=0.0, seed=2)
    weighed = selection.choose(
        margins, budget=10, mode=selection.UNCERTAINTY, random_share=0.0, seed=2, decisive=rarely_decisive_near_zero
    )

    assert sorted(abs(margins[i]) for i in least_sure) == [0.0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5]
    # The pairs humans mostly tie on are skipped for the least sure of those they decide.
    assert sorted(abs(margins[i]) for i in weighed) == [0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.8, 0.9, 0.9]
    assert selection.binary_entropy(0.0) == pytest.approx(math.log(2))
    assert selection.binary_entropy(-3.0) == selection.binary_entropy(3.0) < selection.binary_entropy(0.5)

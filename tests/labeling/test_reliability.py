"""The Dawid-Skene reliability model on seeded simulations with planted annotators, and on the dashboard."""

import re

import numpy as np
import pytest
from django.urls import reverse

from labeling import quality
from labeling.models import Comparison, Judgment, JudgmentSource
from labeling.reliability import Observation, dawid_skene
from tests.labeling.factories import make_pairs
from tests.labeling.test_quality import label

CLEAN = [f"clean-{i}" for i in range(6)]
FLIPPERS = ["flip-1", "flip-2"]  # answer the wrong side with probability 0.4
LEFT_CLICKER = "always-left"


def _other(choice: str) -> str:
    return "b" if choice == "a" else "a"


def simulate(seed: int, *, pairs: int = 300, per_pair: int = 3, clean_error: float = 0.05, ties: float = 0.0):
    """Planted truths and annotators; every pair judged by `per_pair` annotators drawn at random, each shown in a random order.

    A share `ties` of the pairs are truly ties: everyone answers them "tie" but the left-clicker (the bench's
    crowd: a flipper flips sides, and a tie flipped is a tie)."""
    rng = np.random.default_rng(seed)
    truth = {i: "tie" if rng.random() < ties else str(rng.choice(["a", "b"])) for i in range(pairs)}
    annotators = CLEAN + FLIPPERS + [LEFT_CLICKER]
    observations = []
    for item, better in truth.items():
        for who in rng.choice(annotators, per_pair, replace=False):
            left_is_a = bool(rng.integers(2))
            if who == LEFT_CLICKER:
                choice = "a" if left_is_a else "b"
            elif better == "tie":
                choice = "tie"
            elif who in FLIPPERS:
                choice = _other(better) if rng.random() < 0.4 else better
            else:
                choice = _other(better) if rng.random() < clean_error else better
            observations.append(Observation(str(who), item, choice, left_is_a))
    return truth, observations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_noisy_annotators_are_estimated_below_every_clean_one(seed):
    _, observations = simulate(seed)

    result = dawid_skene(observations)

    worst_clean = min(result.annotators[name].reliability for name in CLEAN)
    for noisy in [*FLIPPERS, LEFT_CLICKER]:
        assert result.annotators[noisy].reliability < worst_clean
        assert result.annotators[noisy].high < worst_clean  # apart, not only on average
    assert result.converged


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_where_most_pairs_are_ties_decisive_accuracy_still_sets_the_flippers_apart(seed):
    # Three pairs in four are ties, which a flipper answers right: their reliability (about 0.9) nears the
    # clean annotators', but on the pairs where one side is better they are right 6 times in 10.
    _, observations = simulate(seed, pairs=600, ties=0.75)

    result = dawid_skene(observations)

    clean = [result.annotators[name] for name in CLEAN]
    for noisy in [*FLIPPERS, LEFT_CLICKER]:
        assert result.annotators[noisy].decisive_high < min(r.decisive for r in clean)
    for flipper in FLIPPERS:
        assert result.annotators[flipper].decisive == pytest.approx(0.6, abs=0.12)
        assert result.annotators[flipper].reliability > 0.85
    assert all(r.decisive_low <= r.decisive <= r.decisive_high for r in result.annotators.values())
    assert all(r.decisive_judgments < r.judgments / 2 for r in clean)  # weighted by P(a side is better)


def test_the_left_clicker_shows_a_left_bias_and_the_others_do_not():
    _, observations = simulate(0)

    result = dawid_skene(observations)

    assert result.annotators[LEFT_CLICKER].left_bias > 0.8
    assert all(abs(result.annotators[name].left_bias) < 0.3 for name in CLEAN)


def test_posteriors_recover_the_planted_truth_better_than_the_majority():
    truth, observations = simulate(0)
    votes: dict[int, list[str]] = {}
    for o in observations:
        votes.setdefault(o.item, []).append(o.choice)

    result = dawid_skene(observations)

    model = np.mean([(result.winner_posterior(i, "a") > 0.5) == (t == "a") for i, t in truth.items()])
    majority = np.mean([(v.count("a") > v.count("b")) == (t == "a") for t, v in ((truth[i], votes[i]) for i in truth)])
    assert model > majority


def test_a_pair_judged_by_three_agreeing_reliable_annotators_has_a_posterior_above_0_9():
    _, observations = simulate(0)
    observations += [Observation(name, "extra", "b", i % 2 == 0) for i, name in enumerate(CLEAN[:3])]

    result = dawid_skene(observations)

    assert result.winner_posterior("extra", "b") > 0.9
    assert result.winner_posterior("extra", "a") < 0.05


def test_gold_truth_is_clamped_and_decides_between_two_annotators_who_always_disagree():
    # With two annotators who disagree on every pair, only gold says which of them is right.
    observations = []
    for item in range(40):
        observations.append(Observation("right", item, "a", item % 2 == 0))
        observations.append(Observation("wrong", item, "b", item % 3 == 0))
    gold = {item: "a" for item in range(10)}

    result = dawid_skene(observations, gold=gold)

    assert result.posteriors[0] == (1.0, 0.0, 0.0)
    assert result.annotators["right"].reliability > 0.8 > 0.2 > result.annotators["wrong"].reliability
    assert result.winner_posterior(30, "a") > 0.9  # a pair with no gold follows the annotator gold vindicated


def test_ties_and_both_bad_are_the_neither_class():
    observations = [Observation(name, 1, choice, True) for name, choice in (("x", "tie"), ("y", "both_bad"), ("z", "tie"))]

    result = dawid_skene(observations)

    p_a, p_b, p_neither = result.posteriors[1]
    assert p_neither > max(p_a, p_b)


def test_only_pairs_shared_with_another_annotator_or_gold_are_evidence_of_reliability():
    # "solo" judges pairs 0-9 alone and answers them wrongly half the time: nothing shows it, as nobody
    # else judged them. On pairs 10-13 "solo" and "pair" both judge; "solo" disagrees on gold pair 14.
    observations = [Observation("solo", item, "a" if item % 2 else "b", True) for item in range(10)]
    observations += [Observation(who, item, "a", True) for item in range(10, 14) for who in ("solo", "pair")]
    observations += [Observation("solo", 14, "b", True), Observation("loner", 15, "a", True)]

    result = dawid_skene(observations, gold={14: "a"})

    solo = result.annotators["solo"]
    assert solo.judgments == 5  # pairs 10-13 and gold pair 14, not the ten it judged alone
    assert solo.reliability < 0.9  # one of the five is a wrong gold answer
    # An annotator with no shared or gold pair gets no estimate, rather than the prior's near-certain one.
    assert "loner" not in result.annotators
    assert result.winner_posterior(15, "a") > 0.5  # the pair itself still gets a posterior


def test_no_judgments_give_an_empty_result():
    result = dawid_skene([])
    assert result.annotators == {} and result.posteriors == {}
    assert result.winner_posterior(1, "a") is None


def test_interval_contains_the_estimate_and_narrows_with_more_judgments():
    _, few = simulate(0, pairs=40)
    _, many = simulate(0, pairs=400)

    small, large = dawid_skene(few).annotators["clean-0"], dawid_skene(many).annotators["clean-0"]

    for r in (small, large):
        assert r.low <= r.reliability <= r.high
    assert large.high - large.low < small.high - small.low


@pytest.fixture
def three_judges(campaign, alice, bob, django_user_model):
    """Alice, Bob and Carol, who judge every pair of the campaign (three judgments a pair)."""
    campaign.annotations_per_pair = 3
    campaign.save()
    return alice, bob, django_user_model.objects.create_user("carol", password="x")


@pytest.mark.django_db
def test_dashboard_shows_reliability_and_flags_the_left_clicker(client, admin_user, campaign, three_judges):
    alice, bob, carol = three_judges
    make_pairs(campaign, 30)
    # Alice and Carol answer the truth ("a" is better on every pair); Bob always clicks left.
    for i in range(30):
        label(campaign, alice, "left" if i % 2 == 0 else "right", left_is_a=i % 2 == 0)
        label(campaign, bob, "left", left_is_a=i % 3 == 0)
        label(campaign, carol, "left" if i % 4 == 0 else "right", left_is_a=i % 4 == 0)

    report = quality.campaign_report(campaign=campaign)
    client.force_login(admin_user)
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()

    lines = {name: (rel, low_reliability) for name, _, _, _, rel, low_reliability, _ in report.annotator_lines}
    assert lines["bob"][1] and not lines["alice"][1] and not lines["carol"][1]
    assert lines["bob"][0].reliability < 0.7 < lines["alice"][0].reliability
    assert 'class="num reliability flag"' in page and "reliability (95% interval)" in page
    comparison = Comparison.objects.filter(prompt__campaign=campaign).first()
    fitted = quality.campaign_reliability(campaign=campaign)
    assert fitted.winner_posterior(comparison.pk, "a") > 0.9
    # Bob's name opens his judgments on this campaign in the admin, and only his.
    link = re.search(r'<a class="annotator" href="([^"]+)">bob</a>', page).group(1).replace("&amp;", "&")
    changelist = client.get(link).context["cl"]
    assert changelist.result_count == 30 and {j.annotator for j in changelist.queryset} == {bob}
    # Each with how probable his answer is the truth ("a" on every pair): high only where a was on his left.
    assert all((j.answer_posterior > 0.9) == (j.choice == "a") for j in changelist.result_list)
    assert {j.choice for j in changelist.result_list} == {"a", "b"}
    observations, gold = quality.reliability_input(campaign=campaign)
    assert len(observations) == 90 and gold == {}
    assert dawid_skene(observations, gold=gold).posteriors == fitted.posteriors
    api = {a["username"]: a for a in client.get(reverse("api-progress", args=[campaign.pk])).json()["annotators"]}
    assert api["bob"]["reliability"] == pytest.approx(lines["bob"][0].reliability)
    assert api["bob"]["reliability_low"] <= api["bob"]["reliability"] <= api["bob"]["reliability_high"]
    assert api["bob"]["left_bias"] > 0.5
    assert api["bob"]["decisive_accuracy"] == pytest.approx(lines["bob"][0].decisive)
    assert api["alice"]["decisive_accuracy_low"] <= api["alice"]["decisive_accuracy"] <= api["alice"]["decisive_accuracy_high"]
    # Stored as simulated, his judgments are weighed against the simulated crowd (him alone), not the humans.
    as_human = {j.pk: j.answer_posterior for j in changelist.result_list}
    Judgment.objects.filter(annotator=bob).update(source=JudgmentSource.SIMULATED)
    mine = list(Judgment.objects.filter(annotator=bob).select_related("comparison__prompt"))
    alone = quality.campaign_reliability(campaign=campaign, sources=[JudgmentSource.SIMULATED])
    as_simulated = quality.answer_posteriors(mine)
    assert as_simulated == {j.pk: alone.answer_posterior(j.comparison_id, j.choice) for j in mine} != as_human


@pytest.mark.django_db
def test_dashboard_flags_a_flipper_by_decisive_accuracy_where_most_pairs_are_ties(client, admin_user, campaign, three_judges):
    alice, bob, carol = three_judges
    make_pairs(campaign, 60)
    rng = np.random.default_rng(0)
    # Pairs 0-44 are ties, which all three answer; on pairs 45-59 "a" is better, and Bob answers the other
    # side half the time.
    for i in range(60):
        for user in (alice, bob, carol):
            left_is_a = bool(rng.integers(2))
            if i < 45:
                choice = "tie"
            else:
                picks_a = user != bob or i % 2 == 0
                choice = "left" if picks_a == left_is_a else "right"
            label(campaign, user, choice, left_is_a=left_is_a)

    report = quality.campaign_report(campaign=campaign)
    client.force_login(admin_user)
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()

    lines = {name: (rel, low_rel, low_dec) for name, _, _, _, rel, low_rel, low_dec in report.annotator_lines}
    assert lines["bob"][2] and not lines["alice"][2] and not lines["carol"][2]
    assert lines["bob"][0].decisive < 0.7 < lines["alice"][0].decisive
    assert 'class="num decisive flag"' in page and "decisive accuracy (95% interval)" in page

"""Submitting a judgment: stored once, in terms of a/b, only on a live lease of one's own."""

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling import services
from labeling.models import Assignment, AssignmentState, Choice, Comparison, ComparisonStatus, Judgment, StrengthScale
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


def lease(campaign, user, *, left_is_a: bool | None = None) -> Assignment:
    assignment = services.assignment_next(campaign=campaign, annotator=user)
    if left_is_a is not None:
        Assignment.objects.filter(pk=assignment.pk).update(left_is_a=left_is_a)
        assignment.refresh_from_db()
    return assignment


def submit(assignment, user=None, **kwargs):
    kwargs.setdefault("choice", "left")
    return services.judgment_submit(assignment_id=assignment.pk, annotator=user or assignment.annotator, **kwargs)


@pytest.mark.parametrize(
    ("shown", "left_is_a", "stored"),
    [
        ("left", True, Choice.A),
        ("left", False, Choice.B),
        ("right", True, Choice.B),
        ("right", False, Choice.A),
        ("tie", False, Choice.TIE),
        ("both_bad", True, Choice.BOTH_BAD),
    ],
)
def test_the_side_picked_is_stored_as_completion_a_or_b(campaign, alice, shown, left_is_a, stored):
    make_pairs(campaign)
    result = submit(lease(campaign, alice, left_is_a=left_is_a), choice=shown, time_ms=4200)
    judgment = Judgment.objects.get()
    assert result.created and judgment == result.judgment
    assert (judgment.choice, judgment.left_is_a, judgment.time_ms) == (stored, left_is_a, 4200)
    assert services.choice_to_shown(choice=judgment.choice, left_is_a=left_is_a) == shown


def test_second_submit_of_same_assignment_is_idempotent(campaign, alice):
    make_pairs(campaign)
    assignment = lease(campaign, alice)
    first = submit(assignment, choice="right", strength=2)
    again = submit(assignment, choice="right", strength=2)
    assert first.created and not again.created
    assert again.judgment == first.judgment
    assert Judgment.objects.count() == 1
    assert Comparison.objects.get().judgments_count == 1


def test_resubmit_with_a_different_answer_is_refused_and_the_first_kept(campaign, alice):
    make_pairs(campaign)
    assignment = lease(campaign, alice)
    submit(assignment, choice="right")
    with pytest.raises(services.AlreadySubmitted):
        submit(assignment, choice="left")
    assert Judgment.objects.get().choice == services.choice_from_shown(shown="right", left_is_a=assignment.left_is_a)


def test_submit_on_an_expired_lease_stores_nothing_and_says_so(campaign, alice):
    [pair] = make_pairs(campaign)
    assignment = lease(campaign, alice)
    Assignment.objects.filter(pk=assignment.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    with pytest.raises(services.LeaseExpired, match="ran out"):
        submit(assignment)
    with pytest.raises(services.LeaseExpired):
        submit(assignment)
    assignment.refresh_from_db()
    pair.refresh_from_db()
    assert assignment.state == AssignmentState.EXPIRED
    assert not Judgment.objects.exists() and pair.judgments_count == 0


def test_someone_elses_assignment_cannot_be_submitted_or_skipped(campaign, alice, bob):
    make_pairs(campaign)
    assignment = lease(campaign, alice)
    with pytest.raises(Assignment.DoesNotExist):
        submit(assignment, bob)
    with pytest.raises(Assignment.DoesNotExist):
        services.assignment_skip(assignment_id=assignment.pk, annotator=bob)
    assert not Judgment.objects.exists()


def test_a_skipped_pair_cannot_then_be_judged_nor_a_judged_one_skipped(campaign, alice):
    make_pairs(campaign, 2)
    skipped = lease(campaign, alice)
    services.assignment_skip(assignment_id=skipped.pk, annotator=alice)
    with pytest.raises(services.AssignmentClosed):
        submit(skipped)
    judged = lease(campaign, alice)
    submit(judged)
    with pytest.raises(services.AssignmentClosed):
        services.assignment_skip(assignment_id=judged.pk, annotator=alice)


def test_the_nth_judgment_completes_the_pair(campaign, alice, bob):
    campaign.annotations_per_pair = 2
    campaign.save()
    [pair] = make_pairs(campaign)
    submit(lease(campaign, alice))
    pair.refresh_from_db()
    assert (pair.judgments_count, pair.status) == (1, ComparisonStatus.OPEN)
    submit(lease(campaign, bob))
    pair.refresh_from_db()
    assert (pair.judgments_count, pair.status) == (2, ComparisonStatus.COMPLETE)


def test_a_lease_on_a_pair_already_full_is_refused_rather_than_overfilling_it(campaign, alice, bob):
    [pair] = make_pairs(campaign)
    stale = lease(campaign, alice)
    # Alice's lease lapses, Bob takes and judges the pair, then Alice's lease is (wrongly) live again:
    # e.g. a web server whose clock runs behind. The cap still holds.
    Assignment.objects.filter(pk=stale.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    submit(lease(campaign, bob))
    Assignment.objects.filter(pk=stale.pk).update(leased_until=timezone.now() + timedelta(minutes=5))
    with pytest.raises(services.LeaseExpired):
        submit(stale)
    pair.refresh_from_db()
    assert pair.judgments_count == Judgment.objects.count() == 1


def test_gold_pairs_count_judgments_but_never_complete(campaign, alice):
    campaign.gold_rate = 1.0
    campaign.save()
    make_pairs(campaign)
    [gold] = make_pairs(campaign, gold_choice="a")
    submit(lease(campaign, alice))
    gold.refresh_from_db()
    assert (gold.judgments_count, gold.status) == (1, ComparisonStatus.OPEN)


def test_tie_and_both_bad_are_refused_where_the_campaign_disallows_them(campaign, alice):
    campaign.allow_tie = False
    campaign.allow_both_bad = False
    campaign.save()
    make_pairs(campaign)
    assignment = lease(campaign, alice)
    for choice in ("tie", "both_bad", "a", "sideways"):
        with pytest.raises(services.InvalidJudgment):
            submit(assignment, choice=choice)
    assert not Judgment.objects.exists()


def test_strength_goes_only_with_a_side_and_a_three_point_scale(campaign, alice):
    make_pairs(campaign)
    assignment = lease(campaign, alice)
    with pytest.raises(services.InvalidJudgment, match="tie or both bad"):
        submit(assignment, choice="tie", strength=1)
    with pytest.raises(services.InvalidJudgment, match="1 .slightly"):
        submit(assignment, strength=4)
    campaign.strength_scale = StrengthScale.NONE
    campaign.save()
    with pytest.raises(services.InvalidJudgment, match="no strength"):
        submit(assignment, strength=2)
    assert submit(assignment).judgment.strength is None


def test_a_required_rationale_must_not_be_blank(campaign, alice):
    campaign.rationale_required = True
    campaign.save()
    make_pairs(campaign)
    assignment = lease(campaign, alice)
    with pytest.raises(services.InvalidJudgment, match="rationale"):
        submit(assignment, rationale="   ")
    assert submit(assignment, rationale="A is correct, B is not.").judgment.rationale == "A is correct, B is not."

"""The work queue: which pair an annotator is given, and when."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from labeling import queue, services
from labeling.models import Assignment, AssignmentState, Split
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


@pytest.fixture
def carol(db):
    return services.annotator_create(username="carol", password="carol-password-1")


def next_for(user, campaign, **kwargs):
    return services.assignment_next(campaign=campaign, annotator=user, **kwargs)


def test_next_leases_a_pair_for_the_campaign_lease_time(campaign, alice):
    [pair] = make_pairs(campaign)
    before = timezone.now()
    assignment = next_for(alice, campaign)
    assert assignment.comparison == pair
    assert assignment.state == AssignmentState.LEASED
    assert before + campaign.lease <= assignment.leased_until <= timezone.now() + campaign.lease


def test_next_returns_the_lease_already_held_instead_of_claiming_another(campaign, alice):
    make_pairs(campaign, 3)
    first = next_for(alice, campaign)
    assert next_for(alice, campaign) == first
    assert Assignment.objects.filter(annotator=alice).count() == 1


def test_next_after_the_pair_on_screen_prefetches_one_more_but_never_a_third(campaign, alice):
    make_pairs(campaign, 5)
    shown = next_for(alice, campaign)
    prefetched = next_for(alice, campaign, after_id=shown.pk)
    assert prefetched != shown
    assert next_for(alice, campaign, after_id=prefetched.pk) == shown
    assert next_for(alice, campaign, after_id=shown.pk) == prefetched
    assert Assignment.objects.filter(annotator=alice).count() == 2


def test_higher_priority_prompts_are_served_first_then_oldest(campaign, alice):
    low = make_pairs(campaign, 2, priority=0)
    high = make_pairs(campaign, 2, priority=5)
    served = []
    for _ in range(4):
        assignment = next_for(alice, campaign)
        services.judgment_submit(assignment_id=assignment.pk, annotator=alice, choice="tie")
        served.append(assignment.comparison)
    assert served == [*high, *low]


def test_changing_a_prompts_priority_moves_its_pairs_in_the_queue(campaign, alice):
    first, second = make_pairs(campaign, 2)
    services.prompts_set_priority(prompts=campaign.prompts.filter(pk=second.prompt_id), priority=9)
    second.refresh_from_db()
    assert second.priority == second.prompt.priority == 9
    assert next_for(alice, campaign).comparison == second


def test_disabled_prompts_are_not_served(campaign, alice):
    make_pairs(campaign, 2, enabled=False)
    assert next_for(alice, campaign) is None


def test_heldout_prompts_are_served_too(campaign, alice):
    [pair] = make_pairs(campaign, split=Split.HELDOUT)
    assert next_for(alice, campaign).comparison == pair


def test_pairs_of_other_campaigns_are_not_served(campaign, alice):
    other, _ = services.campaign_get_or_create(name="other")
    make_pairs(other, 2)
    assert next_for(alice, campaign) is None


def test_a_pair_is_not_leased_beyond_n_counting_live_leases_and_judgments(campaign, alice, bob, carol):
    campaign.annotations_per_pair = 2
    campaign.save()
    [pair] = make_pairs(campaign)
    first = next_for(alice, campaign)
    services.judgment_submit(assignment_id=first.pk, annotator=alice, choice="left")
    assert next_for(bob, campaign).comparison == pair  # 1 judgment + 1 live lease = N
    assert next_for(carol, campaign) is None


def test_an_expired_lease_returns_the_pair_to_the_pool(campaign, alice, bob):
    [pair] = make_pairs(campaign)
    lease = next_for(alice, campaign)
    assert next_for(bob, campaign) is None
    Assignment.objects.filter(pk=lease.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    assert next_for(bob, campaign).comparison == pair


def test_an_expired_lease_is_not_handed_back_to_its_holder(campaign, alice):
    first, second = make_pairs(campaign, 2)
    lease = next_for(alice, campaign)
    Assignment.objects.filter(pk=lease.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    assert next_for(alice, campaign).comparison == second


def test_skip_gives_the_pair_to_others_but_never_back_to_the_skipper(campaign, alice, bob):
    [pair] = make_pairs(campaign)
    lease = next_for(alice, campaign)
    skipped = services.assignment_skip(assignment_id=lease.pk, annotator=alice)
    assert skipped.state == AssignmentState.SKIPPED
    assert services.assignment_skip(assignment_id=lease.pk, annotator=alice).state == AssignmentState.SKIPPED
    assert next_for(alice, campaign) is None
    assert next_for(bob, campaign).comparison == pair


def test_an_annotator_is_never_given_a_pair_twice(campaign, alice, bob):
    campaign.annotations_per_pair = 2
    campaign.save()
    make_pairs(campaign, 3)
    seen = []
    while (assignment := next_for(alice, campaign)) is not None:
        services.judgment_submit(assignment_id=assignment.pk, annotator=alice, choice="right")
        seen.append(assignment.comparison_id)
    assert len(seen) == len(set(seen)) == 3


def test_left_right_order_is_drawn_per_assignment(campaign, alice):
    make_pairs(campaign, 64)
    orders = set()
    while (assignment := next_for(alice, campaign)) is not None:
        services.assignment_skip(assignment_id=assignment.pk, annotator=alice)
        orders.add(assignment.left_is_a)
    assert orders == {True, False}


def test_gold_pairs_are_mixed_in_at_gold_rate_one_and_never_at_zero(campaign, alice, bob):
    make_pairs(campaign, 3)
    make_pairs(campaign, 3, gold_choice="a")
    campaign.gold_rate = 0.0
    campaign.save()
    assert not next_for(alice, campaign).comparison.is_gold
    campaign.gold_rate = 1.0
    campaign.save()
    assert next_for(bob, campaign).comparison.is_gold


def test_gold_pairs_are_not_served_when_no_real_work_is_left(campaign, alice):
    campaign.gold_rate = 1.0
    campaign.save()
    make_pairs(campaign, 2, gold_choice="b")
    assert next_for(alice, campaign) is None


def test_gold_pairs_go_to_every_annotator_once_whatever_n(campaign, alice, bob):
    campaign.gold_rate = 1.0
    campaign.save()
    make_pairs(campaign, 2)
    [gold] = make_pairs(campaign, gold_choice="tie")
    for user in (alice, bob):
        assignment = next_for(user, campaign)
        assert assignment.comparison == gold
        services.judgment_submit(assignment_id=assignment.pk, annotator=user, choice="tie")
        assert not next_for(user, campaign).comparison.is_gold
    gold.refresh_from_db()
    assert gold.judgments_count == 2 and gold.status == "open"


def test_the_lease_insert_rechecks_live_leases_and_the_annotators_own(campaign, alice, bob):
    [pair] = make_pairs(campaign)
    lease = next_for(alice, campaign)
    now = timezone.now()

    def leases(user, *, n, at):
        """Whether the lease insert goes through for `user` with N = n at time `at` (then undone)."""
        campaign.annotations_per_pair = n
        savepoint = transaction.savepoint()
        try:
            return queue.lease_if_room(comparison_id=pair.pk, annotator=user, campaign=campaign, now=at) is not None
        finally:
            transaction.savepoint_rollback(savepoint)

    assert not leases(bob, n=1, at=now)
    assert leases(bob, n=2, at=now)
    assert not leases(alice, n=2, at=now)
    assert leases(bob, n=1, at=lease.leased_until)
    assert Assignment.objects.filter(comparison=pair).count() == 1

"""Many annotators at once, on PostgreSQL's row locks: exactly N judgments, no pair given twice."""

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from labeling import services
from labeling.models import Assignment, AssignmentState, Comparison, ComparisonStatus, Judgment
from tests.labeling.factories import make_pairs

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_at_once(jobs: list[Callable[[], object]]) -> list[object]:
    """Run the jobs in threads released together; return their results, re-raising the first error."""
    barrier = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = jobs[i]()
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_many_annotators_claiming_at_once_fill_every_pair_exactly_n_times(campaign):
    campaign.annotations_per_pair = 3
    campaign.save()
    pairs = make_pairs(campaign, 40)
    users = [services.annotator_create(username=f"annotator{i}", password="pw-123456") for i in range(12)]

    def label_until_done(user) -> int:
        judged = 0
        after = None
        while (assignment := services.assignment_next(campaign=campaign, annotator=user, after_id=after)) is not None:
            # Every seventh pair is skipped, so leases also go back to the pool mid-run.
            if assignment.pk % 7 == 0:
                services.assignment_skip(assignment_id=assignment.pk, annotator=user)
            else:
                services.judgment_submit(assignment_id=assignment.pk, annotator=user, choice="left")
                judged += 1
        return judged

    judged = run_at_once([lambda u=u: label_until_done(u) for u in users])
    # "Nothing left" is a moment, not a verdict: a pair someone skips after the others
    # found nothing claimable (it was fully leased then) is back in the pool. The
    # annotators come back for it, as real ones would the next time they ask.
    judged += [label_until_done(u) for u in users]

    assert sum(judged) == Judgment.objects.count() == 3 * len(pairs)
    per_pair = Counter(Judgment.objects.values_list("comparison_id", flat=True))
    assert per_pair == {p.pk: 3 for p in pairs}
    assert set(Comparison.objects.values_list("judgments_count", "status")) == {(3, ComparisonStatus.COMPLETE)}
    per_annotator_pair = Counter(Assignment.objects.values_list("comparison_id", "annotator_id"))
    assert max(per_annotator_pair.values()) == 1
    # No lease was refused for a full pair: the queue never handed out more than N at once.
    assert not Assignment.objects.filter(state__in=[AssignmentState.LEASED, AssignmentState.EXPIRED]).exists()


def test_one_annotators_simultaneous_next_requests_lease_one_pair(campaign, alice):
    make_pairs(campaign, 10)
    results = run_at_once([lambda: services.assignment_next(campaign=campaign, annotator=alice)] * 6)
    assert len({a.pk for a in results}) == 1
    assert Assignment.objects.filter(annotator=alice).count() == 1


def test_a_double_clicked_submit_stores_one_judgment(campaign, alice):
    [pair] = make_pairs(campaign)
    assignment = services.assignment_next(campaign=campaign, annotator=alice)
    submit = lambda: services.judgment_submit(assignment_id=assignment.pk, annotator=alice, choice="right")  # noqa: E731
    results = run_at_once([submit] * 4)
    assert sorted(r.created for r in results) == [False, False, False, True]
    assert len({r.judgment.pk for r in results}) == 1
    pair.refresh_from_db()
    assert pair.judgments_count == Judgment.objects.count() == 1


def test_a_pair_another_annotator_is_claiming_this_instant_is_still_served_while_it_has_room(campaign, alice, bob):
    """SKIP LOCKED passes over a row another claim holds; with room left (N = 2) "nothing left" would be
    wrong, so the queue waits for that claim to commit and serves the pair."""
    campaign.annotations_per_pair = 2
    campaign.save()
    [pair] = make_pairs(campaign)
    claimed, release = threading.Event(), threading.Event()
    served: dict[str, object] = {}

    def claim_and_hold() -> None:
        try:
            with transaction.atomic():
                served["alice"] = services.assignment_next(campaign=campaign, annotator=alice)
                claimed.set()
                release.wait()
        finally:
            connection.close()

    def claim() -> None:
        try:
            served["bob"] = services.assignment_next(campaign=campaign, annotator=bob)
        finally:
            connection.close()

    holder = threading.Thread(target=claim_and_hold)
    holder.start()
    claimed.wait()
    second = threading.Thread(target=claim)
    second.start()
    # Bob's claim either waits on Alice's row lock (then she commits) or has already answered.
    while second.is_alive() and not _waiting_on_a_lock():
        second.join(0.01)
    release.set()
    holder.join()
    second.join()
    assert served["alice"].comparison_id == pair.pk
    assert served["bob"] is not None and served["bob"].comparison_id == pair.pk


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0

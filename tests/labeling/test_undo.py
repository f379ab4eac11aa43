"""Undo: an annotator reopens their last judgment within a short window; the new answer revises the same judgment."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import services
from labeling.models import Assignment, Comparison, ComparisonStatus, Judgment, JudgmentRevision
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


def judged(campaign, user, **answer) -> Judgment:
    assignment = services.assignment_next(campaign=campaign, annotator=user)
    answer.setdefault("choice", "tie")
    return services.judgment_submit(assignment_id=assignment.pk, annotator=user, **answer).judgment


def test_a_new_answer_after_undo_revises_the_same_judgment_and_keeps_the_old_one(campaign, alice):
    [pair] = make_pairs(campaign)
    first = judged(campaign, alice, choice="tie", rationale="same", time_ms=3000)
    services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)
    result = services.judgment_submit(
        assignment_id=first.assignment_id, annotator=alice, choice="left", strength=2, rationale="left is kinder", time_ms=900
    )
    assert (result.created, result.revised) == (False, True)
    judgment = Judgment.objects.get()
    assert judgment.pk == first.pk and judgment.reopened_until is None
    assert (judgment.strength, judgment.rationale, judgment.time_ms) == (2, "left is kinder", 900)
    assert services.choice_to_shown(choice=judgment.choice, left_is_a=judgment.left_is_a) == "left"
    revision = JudgmentRevision.objects.get()
    assert (revision.judgment_id, revision.choice, revision.rationale, revision.time_ms) == (first.pk, "tie", "same", 3000)
    assert revision.answered_at == first.created_at and revision.revised_at >= first.created_at
    pair.refresh_from_db()
    assert (pair.judgments_count, pair.status) == (1, ComparisonStatus.COMPLETE)


def test_a_double_click_on_the_revised_answer_stores_one_revision(campaign, alice):
    make_pairs(campaign)
    first = judged(campaign, alice)
    services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)
    for _ in range(2):
        services.judgment_submit(assignment_id=first.assignment_id, annotator=alice, choice="both_bad")
    assert JudgmentRevision.objects.count() == 1
    with pytest.raises(services.AlreadySubmitted):  # reopened once, revised once
        services.judgment_submit(assignment_id=first.assignment_id, annotator=alice, choice="tie")


def test_undo_after_the_window_is_refused_and_the_answer_stays(campaign, alice, settings):
    settings.LABELING_UNDO_WINDOW_S = 10
    make_pairs(campaign)
    first = judged(campaign, alice)
    Judgment.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(seconds=11))
    with pytest.raises(services.UndoClosed, match="Too late to undo"):
        services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)
    with pytest.raises(services.AlreadySubmitted):
        services.judgment_submit(assignment_id=first.assignment_id, annotator=alice, choice="left")
    assert Judgment.objects.get().choice == "tie" and not JudgmentRevision.objects.exists()


def test_the_window_runs_from_the_last_answer(campaign, alice, settings):
    settings.LABELING_UNDO_WINDOW_S = 10
    make_pairs(campaign)
    first = judged(campaign, alice)
    services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)
    services.judgment_submit(assignment_id=first.assignment_id, annotator=alice, choice="left")
    Judgment.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)  # revised just now
    JudgmentRevision.objects.update(revised_at=timezone.now() - timedelta(seconds=11))
    with pytest.raises(services.UndoClosed):
        services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)


def test_a_settled_pair_cannot_be_undone(campaign, alice):
    make_pairs(campaign)
    first = judged(campaign, alice)
    Comparison.objects.update(status=ComparisonStatus.RETIRED)
    with pytest.raises(services.UndoClosed, match="settled"):
        services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)


def test_only_ones_own_judged_pair_can_be_undone(campaign, alice, bob):
    make_pairs(campaign, 2)
    first = judged(campaign, alice)
    with pytest.raises(Assignment.DoesNotExist):
        services.judgment_reopen(assignment_id=first.assignment_id, annotator=bob)
    leased = services.assignment_next(campaign=campaign, annotator=alice)
    with pytest.raises(services.UndoClosed, match="not judged"):
        services.judgment_reopen(assignment_id=leased.pk, annotator=alice)


def test_a_reopened_judgment_keeps_its_place_in_the_queue(campaign, alice, bob):
    make_pairs(campaign)  # N = 1: alice's judgment fills the pair
    first = judged(campaign, alice)
    services.judgment_reopen(assignment_id=first.assignment_id, annotator=alice)
    assert services.assignment_next(campaign=campaign, annotator=bob) is None
    assert Comparison.objects.get().judgments_count == 1


def test_undo_over_the_api(client, campaign, alice):
    make_pairs(campaign)
    client.force_login(alice)
    pair = client.post(reverse("api-next", args=[campaign.pk]), content_type="application/json").json()
    submit_url = reverse("api-submit", args=[pair["assignment_id"]])
    undo_url = reverse("api-undo", args=[pair["assignment_id"]])
    assert client.post(undo_url).json()["code"] == "undo_closed"  # nothing judged yet
    client.post(submit_url, {"choice": "right", "rationale": "r"}, content_type="application/json")
    undone = client.post(undo_url)
    assert undone.status_code == 200
    assert (undone.json()["choice"], undone.json()["rationale"]) == ("right", "r")
    again = client.post(submit_url, {"choice": "tie"}, content_type="application/json")
    assert again.status_code == 200 and again.json()["revised"] is True and again.json()["choice"] == "tie"
    assert Judgment.objects.count() == 1 and JudgmentRevision.objects.count() == 1

"""Flags: an annotator flags a pair and moves on; the dashboard counts flags; admins resolve them."""

import pytest
from django.urls import reverse

from labeling import services
from labeling.models import AssignmentState, ComparisonStatus, Flag
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


def test_a_flagged_pair_leaves_the_queue_for_everyone_until_its_flag_is_resolved(campaign, alice, bob, admin_user):
    [pair] = make_pairs(campaign)
    leased = services.assignment_next(campaign=campaign, annotator=alice)
    flag = services.comparison_flag(assignment_id=leased.pk, annotator=alice, reason="unsafe", note="gives dosages")
    assert (flag.comparison_id, flag.reason, flag.note, flag.resolved_at) == (pair.pk, "unsafe", "gives dosages", None)
    leased.refresh_from_db()
    assert leased.state == AssignmentState.SKIPPED
    assert services.assignment_next(campaign=campaign, annotator=alice) is None
    assert services.assignment_next(campaign=campaign, annotator=bob) is None
    again = services.comparison_flag(assignment_id=leased.pk, annotator=alice, reason="broken")
    assert again.pk == flag.pk and Flag.objects.count() == 1
    services.flags_resolve(flags=Flag.objects.all(), by=admin_user)
    assert services.assignment_next(campaign=campaign, annotator=alice) is None  # the flagger still skipped it
    assert services.assignment_next(campaign=campaign, annotator=bob).comparison_id == pair.pk


def test_a_flagged_gold_pair_is_held_back_too(campaign, alice, bob):
    campaign.gold_rate = 1.0
    campaign.save()
    make_pairs(campaign, 2)
    [gold] = make_pairs(campaign, gold_choice="a", prompt_text="A gold prompt.")
    leased = services.assignment_next(campaign=campaign, annotator=alice)
    assert leased.comparison_id == gold.pk
    services.comparison_flag(assignment_id=leased.pk, annotator=alice, reason="unclear")
    assert services.assignment_next(campaign=campaign, annotator=bob).comparison_id != gold.pk


def test_a_flag_needs_a_known_reason(campaign, alice):
    make_pairs(campaign)
    leased = services.assignment_next(campaign=campaign, annotator=alice)
    with pytest.raises(services.InvalidFlag, match="reason must be one of unsafe, broken, unclear"):
        services.comparison_flag(assignment_id=leased.pk, annotator=alice, reason="boring")
    assert not Flag.objects.exists()


def test_flag_over_the_api(client, campaign, alice):
    make_pairs(campaign)
    client.force_login(alice)
    pair = client.post(reverse("api-next", args=[campaign.pk])).json()
    url = reverse("api-flag", args=[pair["assignment_id"]])
    assert client.post(url, {"reason": "nope"}, content_type="application/json").status_code == 400
    response = client.post(url, {"reason": "unclear", "note": "which tide?"}, content_type="application/json")
    assert response.status_code == 200 and response.json()["reason"] == "unclear"


def test_the_dashboard_counts_flags_and_admins_resolve_them(client, campaign, alice, bob, admin_user):
    pairs = make_pairs(campaign, 2)
    for user in (alice, bob):
        leased = services.assignment_next(campaign=campaign, annotator=user)
        services.comparison_flag(assignment_id=leased.pk, annotator=user, reason="broken")
    client.force_login(admin_user)
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()
    assert ">2</a></div><div class=\"label\">open flags (2 in all)" in page
    listing = client.get(reverse("admin:labeling_flag_changelist") + "?state=open").content.decode()
    assert listing.count("Broken output") >= 2
    first = Flag.objects.filter(annotator=alice).get()
    client.post(
        reverse("admin:labeling_flag_changelist"),
        {"action": "retire_and_resolve", "_selected_action": [first.pk]},
    )
    first.refresh_from_db()
    first.comparison.refresh_from_db()
    assert first.resolved_at is not None and first.resolved_by == admin_user
    assert first.comparison.status == ComparisonStatus.RETIRED
    assert {p.pk for p in pairs} >= {first.comparison_id}
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()
    assert ">1</a></div><div class=\"label\">open flags (2 in all)" in page

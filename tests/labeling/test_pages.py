"""The server-rendered pages around labeling: the campaign list and the comparison page's first paint."""

import json

import pytest
from django.urls import reverse

from labeling.models import Assignment
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


def test_home_lists_active_campaigns_with_a_start_link(client, campaign, alice):
    from labeling import services

    services.campaign_get_or_create(name="archived", is_active=False)
    make_pairs(campaign)
    client.force_login(alice)
    page = client.get(reverse("home")).content.decode()
    assert reverse("label", args=[campaign.pk]) in page and "Start labeling" in page
    assert "archived" not in page
    assert reverse("campaign-dashboard", args=[campaign.pk]) not in page


def test_staff_see_a_dashboard_link_on_home(client, campaign, admin_user):
    client.force_login(admin_user)
    assert reverse("campaign-dashboard", args=[campaign.pk]) in client.get(reverse("home")).content.decode()


def embedded(page: str, element_id: str):
    marker = f'id="{element_id}" type="application/json">'
    start = page.index(marker) + len(marker)
    return json.loads(page[start : page.index("</script>", start)])


def test_label_page_arrives_with_a_leased_pair_and_progress(client, campaign, alice):
    make_pairs(campaign, 2)
    client.force_login(alice)
    page = client.get(reverse("label", args=[campaign.pk])).content.decode()
    pair = embedded(page, "first-pair")
    assert Assignment.objects.get(annotator=alice).pk == pair["assignment_id"]
    assert embedded(page, "first-progress")["campaign_needed"] == 2
    assert "Pick the more <strong>helpful</strong> answer." in page  # the guidelines, one click away
    # A reload shows the same pair instead of leasing another.
    assert embedded(client.get(reverse("label", args=[campaign.pk])).content.decode(), "first-pair") == pair


def test_label_page_before_generation_says_no_pairs_yet(client, campaign, alice):
    client.force_login(alice)
    page = client.get(reverse("label", args=[campaign.pk])).content.decode()
    assert embedded(page, "first-pair") is None
    assert embedded(page, "first-progress")["campaign_state"] == "no_pairs"
    assert "No pairs yet, check back later" in page and "0 / 0" not in page


def test_annotators_are_not_shown_campaigns_without_pairs_staff_are(client, campaign, alice, admin_user):
    from labeling import services

    empty, _ = services.campaign_get_or_create(name="not generated yet")
    make_pairs(campaign)
    client.force_login(alice)
    page = client.get(reverse("home")).content.decode()
    assert reverse("label", args=[campaign.pk]) in page and "not generated yet" not in page
    client.force_login(admin_user)
    page = client.get(reverse("home")).content.decode()
    assert reverse("label", args=[empty.pk]) in page and "no pairs yet" in page


def test_inactive_campaigns_cannot_be_labeled(client, campaign, alice):
    campaign.is_active = False
    campaign.save()
    client.force_login(alice)
    assert client.get(reverse("label", args=[campaign.pk])).status_code == 404

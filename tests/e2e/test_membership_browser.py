"""Membership in Chromium: a campaign for chosen annotators, and staff pages, answer an outsider in-app."""

import pytest
from django.urls import reverse

from tests.e2e.conftest import CHROMIUM, log_in
from tests.labeling.factories import make_pairs

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def test_an_outsider_sees_no_listing_and_in_app_refusals(page, live_server, campaign, alice, bob):
    campaign.open_to_everyone = False
    campaign.save()
    campaign.members.add(bob)
    make_pairs(campaign, 2)
    log_in(page, live_server, "alice", "alice-password-1")
    assert "helpfulness" not in page.inner_text("main")

    for url, message in (
        (reverse("label", args=[campaign.pk]), "chosen annotators only"),
        (reverse("campaign-dashboard", args=[campaign.pk]), "This page is for staff"),
        (reverse("training:rounds"), "This page is for staff"),
    ):
        response = page.goto(live_server.url + url)
        assert response.status == 403 and page.url == live_server.url + url  # no detour to the admin login
        assert page.inner_text("h1") == "Not open to you" and message in page.inner_text("main")
        assert page.inner_text(".topbar .who") == "alice"
    page.click("text=Back to your campaigns")
    page.wait_for_url(live_server.url + reverse("home"))


def test_a_member_labels_the_campaign(page, live_server, campaign, alice, bob):
    campaign.open_to_everyone = False
    campaign.save()
    campaign.members.add(alice)
    make_pairs(campaign, 1)
    log_in(page, live_server, "alice", "alice-password-1")
    page.click("text=Start labeling")
    page.wait_for_selector("#pair:not([hidden])")

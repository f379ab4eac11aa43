"""Honest states on the comparison page, in Chromium: no pairs yet, nothing for you now, all done; the keys overlay."""

import pytest
from django.urls import reverse

from labeling import services
from tests.e2e.conftest import CHROMIUM, log_in
from tests.e2e.test_labeling_browser import press_and_wait_for_next
from tests.labeling.factories import make_pairs

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def visible_state(page) -> str:
    page.wait_for_selector("#empty:not([hidden])")
    return page.locator("#empty [data-state]:not([hidden]) h2").inner_text()


def test_a_campaign_before_generation_says_no_pairs_yet_with_an_empty_bar(page, live_server, campaign, alice):
    log_in(page, live_server, "alice", "alice-password-1")
    assert page.locator(".campaigns").inner_text().count("helpfulness") == 0  # not listed without pairs
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    assert visible_state(page) == "No pairs yet, check back later"
    assert page.inner_text("#campaign-count") == "no pairs yet"
    assert page.evaluate("document.querySelector('#campaign-bar > span').style.width") == "0%"


def test_all_done_only_when_the_campaign_is(page, live_server, campaign, alice, bob):
    campaign.annotations_per_pair = 2
    campaign.save()
    make_pairs(campaign, 1)
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    press_and_wait_for_next(page, "3")
    assert visible_state(page) == "Nothing for you right now"  # one of two judgments: bob's is still missing
    held = services.assignment_next(campaign=campaign, annotator=bob)
    services.judgment_submit(assignment_id=held.pk, annotator=bob, choice="tie")
    page.reload()
    assert visible_state(page) == "All done"
    assert page.inner_text("#campaign-count") == "1 / 1"  # her own counter: judged 1 of the 1 open to her


def test_the_keys_panel_overlays_the_pair_and_lists_every_key(page, live_server, campaign, alice):
    make_pairs(campaign, 2)
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    page.wait_for_selector("#pair:not([hidden])")
    top = page.locator("#pair").bounding_box()["y"]
    page.keyboard.press("?")
    assert page.is_visible("#keys")
    assert page.locator("#pair").bounding_box()["y"] == top  # not pushed down
    keys = page.locator("#keys kbd").all_inner_texts()
    assert {"1", "2", "3", "4", "r", "s", "u", "g", "?", "Esc", "Enter"} <= set(keys)
    assert page.evaluate("(() => { const k = document.getElementById('keys'); return k.scrollHeight <= k.clientHeight; })()")
    page.keyboard.press("Escape")
    assert not page.is_visible("#keys")

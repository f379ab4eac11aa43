"""Flagging a pair in Chromium with the keyboard: reason, note, Enter, and on to the next pair."""

import pytest
from django.urls import reverse

from labeling.models import Flag
from tests.e2e.conftest import CHROMIUM, log_in
from tests.e2e.test_labeling_browser import press_and_wait_for_next
from tests.labeling.factories import make_pairs

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def test_an_annotator_flags_a_pair_with_a_reason_and_moves_on(page, live_server, campaign, alice):
    make_pairs(campaign, 2)
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    page.wait_for_selector("#pair:not([hidden])")
    flagged = int(page.get_attribute("#workbench", "data-assignment"))
    page.keyboard.press("f")
    assert page.is_visible("#flagging") and not page.is_visible("#strength")
    page.keyboard.press("Escape")  # back: nothing sent
    assert not page.is_visible("#flagging")
    page.keyboard.press("f")
    page.keyboard.press("1")
    assert page.evaluate("document.activeElement.id") == "flag-note"
    page.keyboard.type("gives medication doses")
    with page.expect_response(lambda r: r.url.endswith(f"/assignments/{flagged}/flag/")) as response:
        press_and_wait_for_next(page, "Enter")
    assert response.value.status == 200
    assert "Flagged" in page.inner_text("#notice") and not page.is_visible("#flagging")
    flag = Flag.objects.get()
    assert (flag.reason, flag.note, flag.comparison.assignments.get().pk) == ("unsafe", "gives medication doses", flagged)

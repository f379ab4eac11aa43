"""The comparison page on a phone-sized screen in Chromium, by touch only; screenshots at desktop and phone sizes."""

from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from labeling.models import Flag, Judgment, JudgmentRevision
from tests.e2e.conftest import CHROMIUM, log_in
from tests.e2e.test_labeling_browser import wait_for_today
from tests.labeling.factories import make_pairs

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]

SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"
ANSWER = "Tides rise and fall twice a day because the **moon** pulls the oceans.\n\n" + "More detail follows. " * 20


@pytest.fixture
def phone(page):
    """A touch screen 390 px wide, in the same browser as `page`."""
    context = page.context.browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    phone = context.new_page()
    phone.set_default_timeout(15_000)
    yield phone
    context.close()


def tap_and_wait_for_next(page, selector: str) -> None:
    before = page.get_attribute("#workbench", "data-assignment")
    page.tap(selector)
    page.wait_for_function(
        "b => document.getElementById('workbench').dataset.assignment !== b || !document.getElementById('empty').hidden",
        arg=before,
    )


def test_on_a_phone_the_answers_stack_the_buttons_are_thumb_sized_and_touch_does_everything(phone, live_server, campaign, alice):
    make_pairs(campaign, 4, texts=(ANSWER, "The sun does it."))
    log_in(phone, live_server, "alice", "alice-password-1")
    phone.goto(live_server.url + reverse("label", args=[campaign.pk]))
    phone.wait_for_selector("#pair:not([hidden])")
    left, right = phone.locator("#side-left").bounding_box(), phone.locator("#side-right").bounding_box()
    assert right["y"] >= left["y"] + left["height"] - 1 and left["width"] > 300  # stacked, full width
    assert left["height"] > 100 and right["height"] > 60  # and each shows its answer
    assert "moon" in phone.inner_text("#pair .sides") and phone.is_visible("#left-body") and phone.is_visible("#right-body")
    for box in phone.locator(".answer .choices button").all():
        assert box.bounding_box()["height"] >= 44
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    phone.screenshot(path=str(SCREENSHOTS / "label-phone.png"))

    first = int(phone.get_attribute("#workbench", "data-assignment"))
    phone.tap("[data-choice=right]")
    assert phone.is_visible("#strength")
    phone.screenshot(path=str(SCREENSHOTS / "label-phone-strength.png"))
    tap_and_wait_for_next(phone, "[data-strength='2']")
    phone.wait_for_selector("#last:not([hidden])")
    tap_and_wait_for_next(phone, "#undo")  # the first pair comes back
    assert int(phone.get_attribute("#workbench", "data-assignment")) == first
    phone.tap("#open-rationale")
    phone.fill("#rationale", "On second look, the same.")
    phone.tap("[data-choice=tie]")  # with the box open and filled, the tie is sent at once
    phone.wait_for_function("f => document.getElementById('workbench').dataset.assignment !== String(f)", arg=first)
    flagged = int(phone.get_attribute("#workbench", "data-assignment"))
    phone.tap("#flag")
    phone.tap("[data-flag=broken]")
    phone.fill("#flag-note", "cut off mid-sentence")
    with phone.expect_response(lambda r: r.url.endswith(f"/assignments/{flagged}/flag/")) as flag_response:
        phone.press("#flag-note", "Enter")
    assert flag_response.value.status == 200

    wait_for_today(phone, 1)
    judgment = Judgment.objects.get(assignment_id=first)
    assert (judgment.choice, judgment.rationale) == ("tie", "On second look, the same.")
    assert JudgmentRevision.objects.get().judgment_id == judgment.pk
    assert Flag.objects.get(annotator=alice).note == "cut off mid-sentence"


def test_desktop_screenshot_of_the_label_page(page, live_server, campaign, alice):
    make_pairs(campaign, 1, texts=(ANSWER, "The sun does it."))
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    page.wait_for_selector("#pair:not([hidden])")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "label-desktop.png"))
    page.keyboard.press("?")
    page.screenshot(path=str(SCREENSHOTS / "label-desktop-keys.png"))

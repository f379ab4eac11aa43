"""The comparison page in a real browser (Debian's Chromium, headless), driven by the keyboard."""

import pytest
from django.urls import reverse

from labeling.models import Assignment, AssignmentState, Choice, Judgment
from tests.e2e.conftest import CHROMIUM, log_in
from tests.labeling.factories import make_pairs
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def shown(page) -> dict:
    """What is on screen now: the assignment id and the two answers' text."""
    return {
        "assignment": int(page.get_attribute("#workbench", "data-assignment")),
        "left": page.inner_text("#left-body"),
        "right": page.inner_text("#right-body"),
    }


def press_and_wait_for_next(page, *keys: str) -> None:
    before = page.get_attribute("#workbench", "data-assignment")
    for key in keys:
        page.keyboard.press(key)
    page.wait_for_function(
        "before => { const w = document.getElementById('workbench');"
        " return w.dataset.assignment !== before || !document.getElementById('empty').hidden; }",
        arg=before,
    )


def wait_for_today(page, count: int) -> None:
    page.wait_for_function(
        "n => document.getElementById('today-bar').getAttribute('aria-valuenow') === String(n)", arg=count
    )


def test_annotator_labels_three_pairs_and_skips_one_with_the_keyboard(page, live_server, campaign, alice):
    make_pairs(campaign, 6, texts=("The moon pulls the sea.", "Tides are random."))
    log_in(page, live_server, "alice", "alice-password-1")
    # From the campaign list to the workbench without the mouse.
    for _ in range(15):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Start labeling":
            break
    page.keyboard.press("Enter")
    page.wait_for_selector("#pair:not([hidden])")
    assert page.get_attribute("#today-bar", "aria-valuenow") == "0"
    width_before = page.evaluate("document.querySelector('#campaign-bar > span').style.width")

    page.keyboard.press("?")
    assert page.is_visible("#keys")
    page.keyboard.press("?")
    page.keyboard.press("g")
    assert "helpful" in page.inner_text("#guidelines")
    page.keyboard.press("g")

    seen = []
    for keys in (("1", "Enter"), ("2", "3"), ("3",)):  # left (no strength), right much better, tie
        seen.append(shown(page))
        press_and_wait_for_next(page, *keys)
    skipped = shown(page)
    press_and_wait_for_next(page, "s")

    wait_for_today(page, 3)
    page.wait_for_function("w => document.querySelector('#campaign-bar > span').style.width !== w", arg=width_before)
    # Her share of the campaign: 3 judged of the 5 left to her once the skip is counted (a skipped pair is
    # no longer hers to judge); the page refreshes the count after each answer and after the skip.
    page.wait_for_function("text => document.getElementById('campaign-count').textContent === text", arg="3 / 5")

    judgments = {j.assignment_id: j for j in Judgment.objects.filter(annotator=alice).select_related("comparison")}
    assert sorted(judgments) == sorted(s["assignment"] for s in seen)
    for screen, (expected_side, strength) in zip(seen, [("left", None), ("right", 3), ("tie", None)]):
        judgment = judgments[screen["assignment"]]
        assert judgment.strength == strength and judgment.time_ms is not None
        if expected_side == "tie":
            assert judgment.choice == Choice.TIE
        else:
            picked = judgment.comparison.completion_a if judgment.choice == Choice.A else judgment.comparison.completion_b
            assert picked.text == screen[expected_side]
    assert Assignment.objects.get(pk=skipped["assignment"]).state == AssignmentState.SKIPPED
    assert page.dialogs == []


def test_a_late_reply_with_older_counts_never_overwrites_newer_ones(page, live_server, campaign, alice):
    """Each answer asks for the counts again; on a busy server the replies can cross. The older reply, arriving
    last, is dropped (CI beside a bench once saw the stale count stay on screen)."""
    make_pairs(campaign, 3)
    log_in(page, live_server, "alice", "alice-password-1")
    held = []  # (route, the server's reply when it was asked): replies are let through when the test says
    page.route("**/api/labeling/campaigns/*/me/", lambda route: held.append((route, route.fetch())))
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    page.wait_for_selector("#pair:not([hidden])")

    def wait_for_held(n: int) -> None:
        wait_until(
            lambda: len(held) >= n, what=f"counts request {n}", within_s=15, pause=lambda: page.wait_for_timeout(20)
        )

    press_and_wait_for_next(page, "3")
    wait_for_held(1)  # "1 / 3", held
    press_and_wait_for_next(page, "3")
    wait_for_held(2)  # "2 / 3"
    route, reply = held[1]
    route.fulfill(response=reply)
    page.wait_for_function("() => document.getElementById('campaign-count').textContent === '2 / 3'")
    route, reply = held[0]
    with page.expect_request_finished(lambda request: request is route.request):
        route.fulfill(response=reply)
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert page.inner_text("#campaign-count") == "2 / 3"
    assert page.get_attribute("#campaign-bar", "aria-valuenow") == "2"


def test_twenty_pairs_with_rationales_need_only_the_keyboard_then_nothing_is_left(page, live_server, campaign, alice):
    campaign.rationale_required = True
    campaign.strength_scale = "none"
    campaign.save()
    make_pairs(campaign, 20)
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    for i in range(20):
        page.wait_for_selector("#pair:not([hidden])")
        before = page.get_attribute("#workbench", "data-assignment")
        page.keyboard.press("1234"[i % 4])
        assert page.evaluate("document.activeElement.id") == "rationale"
        page.keyboard.press("Enter")  # empty: refused, stays
        assert page.get_attribute("#workbench", "data-assignment") == before
        page.keyboard.type(f"reason {i}")
        press_and_wait_for_next(page, "Enter")
    page.wait_for_selector("#empty:not([hidden])")
    wait_for_today(page, 20)
    rationales = set(Judgment.objects.filter(annotator=alice).values_list("rationale", flat=True))
    assert rationales == {f"reason {i}" for i in range(20)}


HOSTILE = {
    "left": '<script>window.__pwned = "script"</script> <img src=x onerror="window.__pwned=\'img\'; alert(1)">',
    "right": '[click](javascript:alert(1)) <iframe src="javascript:alert(2)"></iframe> <svg onload=alert(3)>',
    "prompt": '<a href="javascript:alert(4)">prompt</a> <script>alert(5)</script>',
}


def test_hostile_prompts_and_completions_are_shown_as_text_and_never_run(page, live_server, campaign, alice):
    make_pairs(campaign, 2, prompt_text=HOSTILE["prompt"], texts=(HOSTILE["left"], HOSTILE["right"]))
    messages = [{"role": "user", "content": "<script>alert(6)</script><img src=x onerror=alert(7)>"}]
    make_pairs(campaign, 1, messages=messages, texts=(HOSTILE["right"], HOSTILE["left"]))
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    for _ in range(3):  # the first pair comes with the page, the others through the API
        page.wait_for_selector("#pair:not([hidden])")
        text = page.inner_text("#pair")
        assert "<script>" in text and "onerror" in text  # visible, as text
        assert page.locator("#pair script, #pair iframe, #pair img, #pair svg").count() == 0
        assert not page.evaluate(
            "[...document.querySelectorAll('#pair *')].some(e => [...e.attributes].some("
            "a => a.name.startsWith('on') || /javascript:/i.test(a.value)))"
        )
        press_and_wait_for_next(page, "3")
    page.wait_for_selector("#empty:not([hidden])")
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []

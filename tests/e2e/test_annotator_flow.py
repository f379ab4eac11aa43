"""The annotator's flow in Chromium: the two-step strength row and a rationale before or after the pick."""

import pytest
from django.urls import reverse

from labeling.models import Choice, Judgment, JudgmentRevision
from tests.e2e.conftest import CHROMIUM, log_in
from tests.e2e.test_labeling_browser import press_and_wait_for_next, wait_for_today
from tests.labeling.factories import make_pairs

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def open_label_page(page, live_server, campaign) -> None:
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    page.wait_for_selector("#pair:not([hidden])")


def on_screen(page) -> int:
    return int(page.get_attribute("#workbench", "data-assignment"))


def shown_side(judgment: Judgment) -> str:
    if judgment.choice in (Choice.TIE, Choice.BOTH_BAD):
        return judgment.choice
    return "left" if (judgment.choice == Choice.A) == judgment.left_is_a else "right"


def test_strength_row_shows_only_after_left_or_right_names_the_side_and_esc_goes_back(page, live_server, campaign, alice):
    make_pairs(campaign, 3)
    open_label_page(page, live_server, campaign)
    first = on_screen(page)
    assert not page.is_visible("#strength")

    page.keyboard.press("1")
    assert page.is_visible("#strength")
    assert page.inner_text("#strength-question") == "How much better is the left answer?"
    page.keyboard.press("Escape")
    assert not page.is_visible("#strength")
    assert page.locator("[data-choice].chosen").count() == 0

    page.keyboard.press("2")
    assert page.inner_text("#strength-question") == "How much better is the right answer?"
    press_and_wait_for_next(page, "3")
    assert not page.is_visible("#strength")  # the next pair starts at the pick again

    # Tie has no strength: it is sent at once and the row never shows.
    press_and_wait_for_next(page, "3")
    wait_for_today(page, 2)  # the screen moves on before the submit's answer: wait for it to be stored
    judgments = {j.assignment_id: j for j in Judgment.objects.filter(annotator=alice)}
    assert (shown_side(judgments[first]), judgments[first].strength) == ("right", 3)
    assert [j.choice for k, j in judgments.items() if k != first] == [Choice.TIE]


def test_rationale_written_before_the_pick_goes_with_it(page, live_server, campaign, alice):
    make_pairs(campaign, 2)
    open_label_page(page, live_server, campaign)
    first = on_screen(page)
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "rationale"
    page.keyboard.type("Both hedge; equal.")
    page.keyboard.press("Enter")  # no pick yet: leaves the box, keeps the text
    assert page.evaluate("document.activeElement.id") != "rationale"
    assert "Now pick" in page.inner_text("#notice")
    assert on_screen(page) == first and not Judgment.objects.exists()

    press_and_wait_for_next(page, "3")
    wait_for_today(page, 1)
    judgment = Judgment.objects.get(assignment_id=first)
    assert (judgment.choice, judgment.rationale) == (Choice.TIE, "Both hedge; equal.")
    assert page.input_value("#rationale") == "" and not page.is_visible("#rationale-box")


def test_rationale_written_after_the_pick_waits_for_enter(page, live_server, campaign, alice):
    make_pairs(campaign, 2)
    open_label_page(page, live_server, campaign)
    first = on_screen(page)
    page.keyboard.press("r")  # open the box, then go back to the keys to pick
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    page.keyboard.press("2")  # left, clearly: the box is open and empty, so the answer waits
    assert page.evaluate("document.activeElement.id") == "rationale"
    assert on_screen(page) == first and not Judgment.objects.exists()
    page.keyboard.type("Left cites the moon.")
    press_and_wait_for_next(page, "Enter")
    wait_for_today(page, 1)
    judgment = Judgment.objects.get(assignment_id=first)
    assert (shown_side(judgment), judgment.strength, judgment.rationale) == ("left", 2, "Left cites the moon.")


def test_undo_within_the_window_reopens_the_pair_and_the_new_answer_revises_it(page, live_server, campaign, alice):
    make_pairs(campaign, 3)
    open_label_page(page, live_server, campaign)
    first = on_screen(page)
    press_and_wait_for_next(page, "3")
    second = on_screen(page)
    page.wait_for_selector("#last:not([hidden])")
    assert page.inner_text("#last") == "Last: Tie · u undo"

    press_and_wait_for_next(page, "u")
    assert on_screen(page) == first
    assert "you answered Tie" in page.inner_text("#notice")
    press_and_wait_for_next(page, "1", "1")  # left, slightly: then the pair that was on screen comes back
    assert on_screen(page) == second
    page.wait_for_selector("#last:not([hidden])")
    assert page.inner_text("#last-label") == "Left, slightly better"

    judgment = Judgment.objects.get(annotator=alice)
    assert judgment.assignment_id == first
    assert (shown_side(judgment), judgment.strength) == ("left", 1)
    assert list(judgment.revisions.values_list("choice", flat=True)) == [Choice.TIE]
    press_and_wait_for_next(page, "4")
    wait_for_today(page, 2)
    assert Judgment.objects.filter(annotator=alice).count() == 2


def test_undo_after_the_window_does_nothing(page, live_server, campaign, alice, settings):
    settings.LABELING_UNDO_WINDOW_S = 1
    make_pairs(campaign, 3)
    open_label_page(page, live_server, campaign)
    press_and_wait_for_next(page, "4")
    second = on_screen(page)
    page.wait_for_selector("#last:not([hidden])")
    page.wait_for_selector("#last", state="hidden")  # the window closed
    page.keyboard.press("u")
    page.keyboard.press("3")  # u did nothing: this answers the pair on screen
    wait_for_today(page, 2)
    assert Judgment.objects.get(assignment_id=second).choice == Choice.TIE
    assert not JudgmentRevision.objects.exists()


def test_thirty_pairs_with_rationales_and_one_undo_by_keyboard_only(page, live_server, campaign, alice):
    make_pairs(campaign, 30)
    open_label_page(page, live_server, campaign)
    for i in range(30):
        page.wait_for_selector("#pair:not([hidden])")
        page.keyboard.press("r")
        page.keyboard.type(f"reason {i}")
        page.keyboard.press("Enter")  # leaves the box; the rationale goes with the pick
        press_and_wait_for_next(page, *(("1", "2") if i % 3 == 0 else ("3",) if i % 3 == 1 else ("4",)))
        if i == 10:
            # The slip: pair 10 (a tie) was meant as both bad.
            page.wait_for_selector("#last:not([hidden])")  # offered once the tie is stored
            press_and_wait_for_next(page, "u")
            assert page.input_value("#rationale") == "reason 10"  # the old rationale comes back with the pair
            page.keyboard.press("Escape")  # leave the box, keep the text
            press_and_wait_for_next(page, "4")
    page.wait_for_selector("#empty:not([hidden])")
    wait_for_today(page, 30)
    judgments = Judgment.objects.filter(annotator=alice)
    assert sorted(judgments.values_list("rationale", flat=True)) == sorted(f"reason {i}" for i in range(30))
    revised = judgments.get(revisions__isnull=False)
    assert (revised.rationale, revised.choice, revised.revisions.get().choice) == ("reason 10", Choice.BOTH_BAD, Choice.TIE)

"""The prompt admin in Chromium: a readable list at laptop widths, importing a file, and editing chat turns."""

import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from labeling import services
from labeling.models import Campaign, Prompt
from tests.e2e.conftest import CHROMIUM, log_in

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]

SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"

_LONG = (
    "Explain to a curious twelve-year-old why the sky is blue during the day but turns red and orange at sunset, "
    "and what that has to do with the way light scatters in the atmosphere."
)


def _import(campaign: Campaign, rows: list[dict], source: str) -> None:
    stream = io.StringIO("".join(json.dumps(row) + "\n" for row in rows))
    services.prompts_import(campaign=campaign, stream=stream, source=source)


@pytest.mark.parametrize("viewport", [{"width": 1400, "height": 900}, {"width": 1280, "height": 800}])
def test_prompt_list_shows_the_prompt_on_few_lines_and_every_column_at_laptop_widths(
    page, live_server, admin_user, campaign, viewport
):
    Campaign.objects.create(name="harmlessness-and-honesty-2026")
    rows = [{"prompt": f"{_LONG} ({i})", "tags": ["science", "explain-like-twelve"]} for i in range(8)]
    rows.append({"messages": [{"role": "user", "content": "What is a kite?"}, {"role": "assistant", "content": "A toy."},
                              {"role": "user", "content": "How do I fly one on a day without much wind?"}]})
    _import(campaign, rows, "anthropic_hh_rlhf_helpful_base_sample.jsonl")
    page.set_viewport_size(viewport)
    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("admin:labeling_prompt_changelist"))
    page.screenshot(path=str(SCREENSHOTS / f"prompt-list-{viewport['width']}x{viewport['height']}.png"))

    # The number of lines an element's text takes: its line boxes' distinct tops.
    lines = """(selector) => {
        const range = document.createRange();
        range.selectNodeContents(document.querySelector(selector));
        return new Set([...range.getClientRects()].map((box) => Math.round(box.top))).size;
    }"""
    prompt_width = page.locator("th.field-short_text").first.bounding_box()["width"]
    assert prompt_width >= 200, prompt_width
    assert page.evaluate(lines, "th.field-short_text a") <= 4  # 100 characters of prompt, not a word a line
    created = page.locator("th.column-created").bounding_box()
    assert created["x"] + created["width"] <= viewport["width"], created
    assert page.evaluate("(() => { const r = document.querySelector('.results'); return r.scrollWidth <= r.clientWidth; })()")
    assert page.evaluate(lines, "td.field-created") == 1  # the date whole, on one line


def _hh(question: str) -> str:
    shared = f"\n\nHuman: {question}"
    return json.dumps({"chosen": shared + "\n\nAssistant: Sure.", "rejected": shared + "\n\nAssistant: No."}) + "\n"


def test_import_lists_every_bad_line_then_imports_into_a_new_campaign_and_lands_on_its_prompts(
    page, live_server, admin_user, campaign
):
    page.set_viewport_size({"width": 1400, "height": 900})
    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("admin:labeling_prompt_upload"))
    bad = _hh("What is a kite?") + '{"prompt": ""}\n' + '{"chosen": 1, "rejected": 2}\n' + "{oops\n"
    page.set_input_files("#id_file", {"name": "hh_sample.jsonl", "mimeType": "application/jsonl", "buffer": bad.encode()})
    page.fill("#id_new_campaign", "kites")
    page.fill("#id_annotations_per_pair", "2")
    page.click("input[type=submit]")
    page.wait_for_selector("#import-problems")
    page.screenshot(path=str(SCREENSHOTS / "prompt-import-refused.png"), full_page=True)
    rows = page.locator("#import-problems tbody tr")
    assert rows.count() == 3
    assert rows.nth(0).locator("td").all_inner_texts() == ["hh_sample.jsonl", "2", "prompt", "must be a non-empty string"]
    assert rows.nth(1).locator("td").all_inner_texts()[1:3] == ["3", "chosen, rejected"]
    assert rows.nth(2).locator("td").all_inner_texts()[1:3] == ["4", "—"]
    assert not Campaign.objects.filter(name="kites").exists() and not Prompt.objects.exists()

    good = _hh("What is a kite?") + _hh("How do I fly one?")
    page.set_input_files("#id_file", {"name": "hh_sample.jsonl", "mimeType": "application/jsonl", "buffer": good.encode()})
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    page.screenshot(path=str(SCREENSHOTS / "prompt-import-done.png"))
    assert page.inner_text(".messagelist .success") == (
        "Imported 2 prompts from hh_sample.jsonl (HH-RLHF (JSONL)) into the new campaign kites; skipped 0 duplicates."
    )
    assert page.locator("#result_list tbody tr").count() == 2
    assert "How do I fly one?" in page.inner_text("#result_list")
    assert Campaign.objects.get(name="kites").annotations_per_pair == 2


def test_chat_prompt_is_edited_as_turns_and_a_bad_last_turn_is_named(page, live_server, admin_user, campaign):
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a kite?"},
        {"role": "assistant", "content": "A toy that flies."},
        {"role": "user", "content": "How do I fly one?"},
    ]
    _import(campaign, [{"messages": turns}], "chat.jsonl")
    prompt = Prompt.objects.get()
    page.set_viewport_size({"width": 1400, "height": 900})
    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("admin:labeling_prompt_change", args=[prompt.pk]))
    assert not page.is_visible("#id_messages")  # the JSON hides behind the rows
    assert page.locator(".turn").count() == 4
    assert page.locator(".turn-text").nth(3).input_value() == "How do I fly one?"
    page.screenshot(path=str(SCREENSHOTS / "prompt-turns.png"), full_page=True)

    page.click("button[aria-label='Remove turn 1']")
    assert page.locator(".turn-number").all_inner_texts() == ["Turn 1", "Turn 2", "Turn 3"]
    page.fill("[aria-label='Turn 3 text']", "How do I fly one when there is little wind?")
    page.click(".turns-add")  # after a user turn comes the assistant's
    assert page.locator(".turn-role").nth(3).input_value() == "assistant"
    page.keyboard.type("Run with it.")  # the new turn's text has the focus
    assert page.inner_text(".turns-note") == "The last turn must be the user's: the model answers it."
    page.click("input[name=_save]")
    page.wait_for_selector(".errornote")
    page.screenshot(path=str(SCREENSHOTS / "prompt-turns-error.png"), full_page=True)
    assert "Turn 4 (the last): the role must be user" in page.inner_text(".field-messages .errorlist")
    assert page.locator(".turn").count() == 4  # the rows come back as posted
    assert page.locator(".turn-error .turn-number").all_inner_texts() == ["Turn 4"]

    page.select_option("[aria-label='Turn 4 role']", "user")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    prompt.refresh_from_db()
    assert prompt.messages == [
        {"role": "user", "content": "What is a kite?"},
        {"role": "assistant", "content": "A toy that flies."},
        {"role": "user", "content": "How do I fly one when there is little wind?"},
        {"role": "user", "content": "Run with it."},
    ]

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

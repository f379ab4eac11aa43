"""An admin imports a preference file from the comparison list in Chromium; screenshots of the form, the result and a refusal."""

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from labeling.models import Judgment, JudgmentSource
from tests.e2e.conftest import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"


def test_an_admin_imports_hh_rlhf_pairs_and_sees_the_detected_format(page, live_server, campaign, admin_user, tmp_path):
    good = tmp_path / "hh-sample.jsonl"
    asked = [f"\n\nHuman: Question {i}?\n\nAssistant: " for i in range(3)]
    lines = [{"chosen": f"{q}A careful answer {i}.", "rejected": f"{q}<b>no</b> {i}"} for i, q in enumerate(asked)]
    good.write_text("".join(json.dumps(line) + "\n" for line in lines))
    bad = tmp_path / "broken.jsonl"
    bad.write_text(good.read_text() + '{"prompt": "q", "chosen": ""}\n')
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    log_in(page, live_server, "ada", "ada-password-1")

    page.goto(live_server.url + reverse("admin:labeling_comparison_changelist"))
    page.get_by_role("link", name="Import preferences").click()
    page.select_option("#id_campaign", label=campaign.name)
    page.set_input_files("#id_file", str(bad))
    page.screenshot(path=str(SCREENSHOTS / "import-preferences-form.png"), full_page=True)
    page.get_by_role("button", name="Import").click()
    page.get_by_text("Nothing was imported: broken.jsonl has 1 bad line").wait_for()
    assert page.locator("#import-problems tbody td").nth(1).inner_text() == "4"
    page.screenshot(path=str(SCREENSHOTS / "import-preferences-refused.png"), full_page=True)
    assert not Judgment.objects.exists()

    page.set_input_files("#id_file", str(good))
    page.select_option("#id_use_as", "heldout")
    page.get_by_role("button", name="Import").click()
    page.get_by_text("imported 3 judged pairs as heldout").wait_for()
    assert "HH-RLHF transcripts (3 lines)" in page.content()
    assert "&lt;b&gt;no&lt;/b&gt; 0" in page.content()  # the imported answer shows as text, not markup
    page.screenshot(path=str(SCREENSHOTS / "import-preferences-done.png"), full_page=True)
    assert Judgment.objects.filter(source=JudgmentSource.IMPORTED).count() == 3

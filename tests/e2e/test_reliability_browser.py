"""The dashboard, tried as a lead would: planted noisy annotators stand out in the reliability column."""

import random
from pathlib import Path

import pytest
from django.urls import reverse

from labeling import services
from tests.e2e.conftest import CHROMIUM, log_in
from tests.labeling.factories import make_pairs
from tests.labeling.test_quality import label

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]
SCREENSHOTS = Path("var/screenshots")


def test_noisy_and_left_clicking_annotators_stand_out_on_the_dashboard(page, live_server, admin_user, campaign):
    campaign.annotations_per_pair = 5
    campaign.save(update_fields=["annotations_per_pair"])
    make_pairs(campaign, 40)
    rng = random.Random(0)
    names = ["clean-1", "clean-2", "clean-3", "flipper", "left-clicker"]
    users = {name: services.annotator_create(username=name, password=f"{name}-password-1") for name in names}
    for i in range(40):
        for name, user in users.items():
            left_is_a = rng.random() < 0.5
            truth_left = left_is_a  # "a" is the better completion on every pair
            if name == "left-clicker":
                picks_left = True
            elif name == "flipper" and rng.random() < 0.4:
                picks_left = not truth_left
            elif name.startswith("clean") and rng.random() < 0.05:
                picks_left = not truth_left
            else:
                picks_left = truth_left
            label(campaign, user, "left" if picks_left else "right", left_is_a=left_is_a)

    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("campaign-dashboard", args=[campaign.pk]))

    flagged = page.eval_on_selector_all(
        "table.annotators tbody tr", "rows => rows.filter(r => r.querySelector('td.reliability.flag')).map(r => r.cells[0].innerText)"
    )
    assert sorted(flagged) == ["flipper", "left-clicker"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("table.annotators").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "i15-dashboard-reliability.png"), full_page=True)

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
        "table.annotators tbody tr", "rows => rows.filter(r => r.querySelector('td.reliability.flag, td.decisive.flag')).map(r => r.cells[0].innerText)"
    )
    assert sorted(flagged) == ["flipper", "left-clicker"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("table.annotators").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "i15-dashboard-reliability.png"), full_page=True)


def test_the_comparison_admin_shows_why_each_pair_was_picked_and_its_margin(page, live_server, admin_user, campaign):
    campaign.pair_selection = "uncertainty"
    campaign.save(update_fields=["pair_selection"])
    pairs = make_pairs(campaign, 6)
    margins = dict(zip([p.pk for p in pairs], [2.5, -0.04, 1.25, 0.3, -3.0, 0.9]))
    services.pairs_select(campaign=campaign, margins=margins, budget=3)

    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("admin:labeling_comparison_changelist") + "?o=1")

    rows = page.eval_on_selector_all(
        "#result_list tbody tr",
        "rows => rows.map(r => [r.querySelector('.field-selected_by').innerText, r.querySelector('.field-policy_margin').innerText])",
    )
    # Budget 3 with a 20% random share: the two least sure pairs, and one more drawn at random.
    assert sorted(margin for why, margin in rows if why == "uncertainty") == ["-0.04", "0.3"]
    assert [why for why, _ in rows].count("random") == 1 and [why for why, _ in rows].count("-") == 3  # the admin's empty value
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1900, "height": 900})  # the list is wider than the default viewport
    page.screenshot(path=str(SCREENSHOTS / "i15-admin-comparisons-selection.png"), full_page=True)

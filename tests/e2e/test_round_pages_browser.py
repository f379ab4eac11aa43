"""The rounds index (with its leaderboard) and a round page in Chromium: they render, fit the window, and
leave screenshots in var/screenshots/ to look at."""

import random
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from generation.models import GenerationJob, ModelVersion
from labeling.models import Split
from tests.e2e.conftest import CHROMIUM, log_in
from tests.training.conftest import PairFactory
from training import selectors
from training.export import AggregationPolicy
from training.models import RoundMetric, RoundStatus, TrainingRound

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]

SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"


def judged(campaign, *, policy: ModelVersion, settled: int) -> PairFactory:
    """N = 2 judgments a pair: `settled` training pairs both judges agree on, and one still half judged."""
    campaign.annotations_per_pair = 2
    campaign.save()
    pairs = PairFactory(campaign=campaign, policy=policy)
    for i in range(settled):
        pairs.pair(votes=["a", "a"], text=f"train {i}")
    pairs.pair(votes=["a"], text="half judged")
    return pairs


def fits_the_window(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_rounds_index_and_round_page_in_a_browser(page, live_server, admin_user, campaign):
    base = ModelVersion.objects.create(name="tiny-base", base_path="var/models/tiny")
    round1 = ModelVersion.objects.create(name="helpfulness/dpo-round-1", base_path=base.base_path, parent=base)
    round2 = ModelVersion.objects.create(name="helpfulness/dpo-round-2", base_path=base.base_path, parent=round1)
    pairs = judged(campaign, policy=base, settled=12)
    pairs.pair(votes=["tie", "both_bad"], text="no winner")
    rng = random.Random(0)
    for i, (a, b, p_b) in enumerate([(base, round1, 0.7), (round1, round2, 0.6), (base, round2, 0.8)] * 10):
        vote = "b" if rng.random() < p_b else "a"
        PairFactory(campaign=campaign, policy=a).pair(votes=[vote], policy_b=b, text=f"ab {i}", split=Split.HELDOUT)
    scripted = ["simulated", "simulated"]
    pairs.pair(votes=["a", "b"], sources=scripted, policy_b=round2, text="scripted", split=Split.HELDOUT)

    evidence = selectors.round_evidence(campaign=campaign, policy=AggregationPolicy(), min_heldout_pairs=50)
    ab_job = GenerationJob.objects.create(campaign=campaign, policy=round1, policy_b=base)
    promoted = TrainingRound.objects.create(
        campaign=campaign, number=1, start_version=base, reference_version=base, output_version=round1,
        status=RoundStatus.PROMOTED, progress=1.0, config={"max_length": 512, "regenerate": False, "ab_share": 0.5},
        evidence={"start": evidence, "export": evidence},
        eval_results={
            "pairs": 60, "samples": 16, "accuracy": 0.683, "margin": 0.00042, "mean_length": 41.5, "kl": -0.004,
            "queued_jobs": {"ab": ab_job.pk},
            "gate": {"passed": True, "reason": "passed: lower bound above 0.5", "pairs": 60},
        },
    )  # fmt: skip
    for step in range(1, 9):
        RoundMetric.objects.create(
            round=promoted, step=step, values={"loss": 0.6931 - step * 1e-5, "rewards/margins": step * 1e-4}
        )
    running = TrainingRound.objects.create(
        campaign=campaign, number=2, start_version=round1, reference_version=round1,
        status=RoundStatus.RUNNING, progress=0.1, evidence={"start": evidence},
    )  # fmt: skip
    log_in(page, live_server, "ada", "ada-password-1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(live_server.url + reverse("training:rounds"))
    ranks = page.locator("table.leaderboard tbody tr")
    assert ranks.count() == 3 and "(anchor)" in page.inner_text("table.leaderboard")
    assert page.locator("header nav a", has_text="Rounds").count() == 1
    assert fits_the_window(page)
    page.screenshot(path=str(SCREENSHOTS / "training-rounds.png"), full_page=True)

    page.goto(live_server.url + reverse("training:round", args=[promoted.pk]))
    assert page.locator("table.evidence").is_visible() and "A/B job" in page.inner_text("main")
    assert page.locator("header nav a", has_text="Rounds").count() == 1
    assert fits_the_window(page)
    page.screenshot(path=str(SCREENSHOTS / "training-round-promoted.png"), full_page=True)

    page.goto(live_server.url + reverse("training:round", args=[running.pk]))
    page.screenshot(path=str(SCREENSHOTS / "training-round-running.png"), full_page=True)


def test_the_admin_start_form_shows_what_a_round_would_stand_on(page, live_server, admin_user, campaign):
    policy = ModelVersion.objects.create(name="tiny-base", base_path="var/models/tiny")
    pairs = judged(campaign, policy=policy, settled=16)
    pairs.pair(votes=["a", "a"], text="held out", split=Split.HELDOUT)
    log_in(page, live_server, "ada", "ada-password-1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(live_server.url + reverse("admin:labeling_campaign_changelist"))
    page.check(f"input[name='_selected_action'][value='{campaign.pk}']")
    page.select_option("select[name='action']", "start_dpo_round")
    page.click("button[name='index']")

    assert page.locator("table.evidence").is_visible() and page.locator("#id_ab_share").is_visible()
    warning = page.locator("[data-gate-warning]")
    assert warning.is_visible() and "Fewer than the 50 held-out pairs" in warning.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "training-start-form.png"), full_page=True)
    # The warning follows the gate's minimum as the admin types it: one settled held-out pair meets 1, not 2.
    page.fill("#id_gate_min_heldout_pairs", "1")
    assert warning.is_hidden()
    page.fill("#id_gate_min_heldout_pairs", "2")
    assert warning.is_visible() and "Fewer than the 2 held-out pairs" in warning.inner_text()

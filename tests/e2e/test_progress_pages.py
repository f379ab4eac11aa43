"""The pages that watch background work follow it in a real browser: progress bar, counts, log."""

import pytest
from django.urls import reverse

from generation.models import GenerationJob, GenerationSkip, JobPhase, JobStatus, ModelVersion
from labeling.models import Prompt
from tests.e2e.conftest import CHROMIUM, log_in
from training.models import RoundStatus, TrainingRound

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def policy(db) -> ModelVersion:
    return ModelVersion.objects.create(name="tiny-base", base_path="var/models/tiny")


def wait_for_progress(page, bar: str, percent: int) -> None:
    page.wait_for_function(
        "([bar, n]) => document.querySelector(bar).parentElement.getAttribute('aria-valuenow') === String(n)",
        arg=[bar, percent],
    )


def test_the_job_page_follows_a_running_job_until_it_fails(page, live_server, admin_user, campaign, policy):
    job = GenerationJob.objects.create(campaign=campaign, policy=policy, status=JobStatus.RUNNING, total=10, done=2)
    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("generation:job", args=[job.pk]))
    assert page.inner_text("#job-done") == "2"

    GenerationJob.objects.filter(pk=job.pk).update(done=5, skipped_identical=1, phase=JobPhase.STORING)
    wait_for_progress(page, "#job-progress", 50)
    assert (page.inner_text("#job-done"), page.inner_text("#job-identical")) == ("5", "1")
    assert page.inner_text("#job-phase") == "Storing"

    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: <b>engine died</b>'
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error=traceback)
    page.wait_for_selector("#job-error:not([hidden])")
    assert page.inner_text("#job-error-summary") == "RuntimeError: <b>engine died</b>"  # as text, one line
    assert not page.is_visible("#job-error-detail")  # the traceback is folded away
    assert page.inner_text("#job-status") == "Failed"
    assert not page.is_visible("#job-phase")


def test_the_job_page_lists_a_skipped_prompt_on_one_wrapped_line_without_widening_the_page(
    page, live_server, admin_user, campaign, policy
):
    job = GenerationJob.objects.create(
        campaign=campaign, policy=policy, status=JobStatus.RUNNING, total=7, done=6, skipped=0
    )
    prompt = Prompt.objects.create(campaign=campaign, text="long", content_hash="h" * 64)
    unbroken = "x" * 3000  # an engine message with no place to break, as the 2,530 px wide page had
    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("generation:job", args=[job.pk]))

    GenerationSkip.objects.create(
        job=job, prompt=prompt, reason="too long: 3,211 tokens, and the policy's context holds 512", detail=unbroken
    )
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, done=7, skipped=1)
    page.wait_for_selector("#job-skips li")  # the page reloads once the job ends with new skips
    line = page.inner_text("#job-skips li summary").strip()
    assert page.inner_text("#job-skips li").startswith(f"Prompt {prompt.pk} long: too long: 3,211 tokens")
    assert line == "Engine's message" and not page.is_visible("#job-skips li pre")
    page.click("#job-skips li summary")  # unfolded, the unbroken message still wraps
    assert page.is_visible("#job-skips li pre")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.inner_text("#job-skipped") == "1"


def test_the_round_page_follows_an_active_round_and_reloads_when_it_ends(page, live_server, admin_user, campaign, policy):
    training_round = TrainingRound.objects.create(
        campaign=campaign, number=1, start_version=policy, reference_version=policy, status=RoundStatus.RUNNING
    )
    log_in(page, live_server, "ada", "ada-password-1")
    page.goto(live_server.url + reverse("training:round", args=[training_round.pk]))

    TrainingRound.objects.filter(pk=training_round.pk).update(progress=0.4, log_tail="step 1: loss=0.69\n<i>x</i>")
    wait_for_progress(page, "#round-progress", 40)
    page.wait_for_function("() => document.getElementById('round-log').textContent.includes('<i>x</i>')")

    with page.expect_navigation():  # the page reloads once to show the final state
        TrainingRound.objects.filter(pk=training_round.pk).update(status=RoundStatus.GATED, progress=1.0)
    assert page.get_attribute("#round", "data-active") == "0"
    assert page.inner_text("#round-status") == RoundStatus.GATED.label

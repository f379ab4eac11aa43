"""Triggers and views: the staff API, the job page, and the admin's "Generate pairs" and job actions."""

import io
import json
import re

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from generation import services
from generation.models import GenerationJob, GenerationSkip, JobStatus, ModelVersion
from labeling import services as labeling_services
from labeling.models import Campaign, Prompt

pytestmark = pytest.mark.django_db

START = reverse("generation-api:job-start")
JSON = "application/json"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_staff_starts_a_job_with_the_campaigns_policy_enqueued_after_commit(
    admin_user: User, campaign: Campaign, prompts: list[Prompt], django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = logged_in(admin_user).post(START, {"campaign": campaign.pk, "limit": 3, "seed": 9}, JSON)

    assert response.status_code == 201, response.content
    job = GenerationJob.objects.get()
    campaign.refresh_from_db()
    assert job.policy == campaign.active_policy
    assert job.policy.base_path == settings.POLICY_MODEL
    assert (job.limit, job.seed, job.created_by, job.status, job.total) == (3, 9, admin_user, JobStatus.QUEUED, 3)
    assert len(callbacks) == 1
    body = response.json()
    assert body["id"] == job.pk and body["page_url"] == reverse("generation:job", args=[job.pk])


def test_annotators_and_anonymous_users_cannot_start_or_read_jobs(
    alice: User, campaign: Campaign, policy: ModelVersion
) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy)
    detail = reverse("generation-api:job-detail", args=[job.pk])
    for client in (logged_in(alice), Client()):
        assert client.post(START, {"campaign": campaign.pk}, JSON).status_code in (401, 403)
        assert client.get(detail).status_code in (401, 403)
    assert GenerationJob.objects.count() == 1


@pytest.mark.parametrize(
    "fields, bad",
    [
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": 0}, "temperature"),  # greedy: both samples would be the same
        ({"max_tokens": 0}, "max_tokens"),
        ({"limit": 0}, "limit"),
    ],
)
def test_invalid_job_parameters_are_rejected(
    admin_user: User, campaign: Campaign, policy: ModelVersion, fields: dict, bad: str
) -> None:
    response = logged_in(admin_user).post(START, {"campaign": campaign.pk, "policy": policy.pk, **fields}, JSON)
    assert response.status_code == 400
    assert bad in response.json()
    assert not GenerationJob.objects.exists()


def test_ab_job_needs_two_different_policies(admin_user: User, campaign: Campaign, policy: ModelVersion) -> None:
    response = logged_in(admin_user).post(
        START, {"campaign": campaign.pk, "policy": policy.pk, "policy_b": policy.pk}, JSON
    )
    assert response.status_code == 400 and "policy_b" in response.json()


def test_job_status_endpoint_reports_progress(admin_user: User, campaign: Campaign, policy: ModelVersion) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy)
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, done=3, total=12, skipped_identical=1)

    body = logged_in(admin_user).get(reverse("generation-api:job-detail", args=[job.pk])).json()

    assert (body["status"], body["done"], body["total"], body["skipped_identical"]) == ("running", 3, 12, 1)
    assert body["progress"] == 0.25 and body["finished"] is False
    assert (body["campaign"], body["policy"], body["policy_b"]) == (campaign.name, policy.name, None)


def test_job_page_shows_progress_and_escapes_worker_text(
    admin_user: User, alice: User, campaign: Campaign, policy: ModelVersion
) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, done=1, total=4, error="OSError: <script>alert(1)</script>"
    )
    page = reverse("generation:job", args=[job.pk])

    response = logged_in(admin_user).get(page)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'style="width: 25%"' in html
    assert reverse("generation-api:job-detail", args=[job.pk]) in html
    assert 'data-finished="1"' in html and "generation/job.js" in html
    assert logged_in(alice).get(page).status_code == 403  # the app's 403 page, not the admin login


def test_job_page_names_a_skipped_prompt_by_its_opening_words_and_file_escaped(
    admin_user: User, campaign: Campaign, policy: ModelVersion
) -> None:
    stream = io.StringIO(json.dumps({"prompt": "<b>Summarize</b> " + "this very long thread " * 20}) + "\n")
    labeling_services.prompts_import(campaign=campaign, stream=stream, source="hh-sample.jsonl")
    job = services.generation_job_create(campaign=campaign, policy=policy)
    GenerationSkip.objects.create(job=job, prompt=Prompt.objects.get(), reason="too long: 3,612 tokens")

    html = logged_in(admin_user).get(reverse("generation:job", args=[job.pk])).content.decode()

    assert "&lt;b&gt;Summarize&lt;/b&gt; this very long thread" in html and "<b>Summarize" not in html
    assert "from hh-sample.jsonl: too long: 3,612 tokens" in html and "thread " * 20 not in html  # cut short


def test_generate_pairs_admin_action_shows_the_count_then_queues_the_job_when_confirmed(
    admin_user: User, campaign: Campaign, prompts: list[Prompt], django_capture_on_commit_callbacks
) -> None:
    admin = logged_in(admin_user)
    changelist = reverse("admin:labeling_campaign_changelist")
    selection = {"action": "generate_pairs", "_selected_action": [campaign.pk]}

    form = admin.post(changelist, selection)  # the action opens its options form
    assert form.status_code == 200 and not GenerationJob.objects.exists()
    html = form.content.decode()
    assert 'name="temperature"' in html and 'name="only_missing"' in html and 'name="seed"' in html
    assert 'name="confirm_total" value="5"' in html and "Generate pairs for 5 prompts" in html
    # It shows the values a job takes when they are left alone, only-missing ticked.
    assert re.search(r'name="only_missing"[^>]*checked', html) and re.search(r'name="max_tokens"[^>]*value="128"', html)

    counted = admin.post(changelist, {**selection, "recount": "1", "limit": "2", "only_missing": "on", "temperature": "0.7", "top_p": "1", "max_tokens": "64"})
    assert 'name="confirm_total" value="2"' in counted.content.decode()

    # A stale count (the options changed since it was shown) asks again instead of starting.
    stale = admin.post(changelist, {**selection, "apply": "1", "confirm_total": "5", "limit": "2", "only_missing": "on", "temperature": "0.7", "top_p": "1", "max_tokens": "64"})
    assert stale.status_code == 200 and "changed since the count" in stale.content.decode()
    assert not GenerationJob.objects.exists()

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin.post(changelist, {**selection, "apply": "1", "confirm_total": "2", "limit": "2", "only_missing": "on", "temperature": "0.7", "top_p": "1", "max_tokens": "64"})

    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("generation:job", args=[job.pk])
    campaign.refresh_from_db()
    assert job.policy == campaign.active_policy and job.created_by == admin_user
    assert (job.total, job.limit, job.temperature, job.max_tokens, job.only_missing) == (2, 2, 0.7, 64, True)
    assert len(callbacks) == 1


def test_unticking_only_missing_in_the_admin_form_starts_a_forced_resample(
    admin_user: User, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    admin = logged_in(admin_user)
    changelist = reverse("admin:labeling_campaign_changelist")
    options = {"action": "generate_pairs", "_selected_action": [campaign.pk], "policy": policy.pk, "max_tokens": "8"}

    unticked = admin.post(changelist, {**options, "recount": "1"}).content.decode()  # the box posts nothing
    assert 'name="confirm_total" value="5"' in unticked and not re.search(r'name="only_missing"[^>]*checked', unticked)
    admin.post(changelist, {**options, "apply": "1", "confirm_total": "5"})

    assert GenerationJob.objects.get().only_missing is False


def test_generate_pairs_admin_form_shows_option_errors_and_starts_nothing(
    admin_user: User, campaign: Campaign, prompts: list[Prompt]
) -> None:
    response = logged_in(admin_user).post(
        reverse("admin:labeling_campaign_changelist"),
        {"action": "generate_pairs", "_selected_action": [campaign.pk], "apply": "1", "top_p": "1.5", "confirm_total": "0"},
    )
    assert response.status_code == 200 and "less than or equal to 1" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_admin_lists_jobs_with_progress_and_resumes_a_failed_one(
    admin_user: User, campaign: Campaign, policy: ModelVersion, django_capture_on_commit_callbacks
) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy)
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, done=2, total=8, error="boom")
    admin = logged_in(admin_user)
    changelist = reverse("admin:generation_generationjob_changelist")

    assert '<progress max="8" value="2"></progress>' in admin.get(changelist).content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        admin.post(changelist, {"action": "resume", "_selected_action": [job.pk]})

    job.refresh_from_db()
    assert (job.status, job.error, job.done) == (JobStatus.QUEUED, "", 2)
    assert len(callbacks) == 1

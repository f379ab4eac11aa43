"""`manage.py generate_pairs`: queue a job, or run it here with --wait."""

import io

import pytest
from django.core.management import CommandError, call_command

from generation.models import Completion, GenerationJob, JobStatus, ModelVersion
from labeling.models import Campaign, Comparison, Prompt


def generate_pairs(*args: str) -> str:
    out = io.StringIO()
    call_command("generate_pairs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.django_db
def test_wait_runs_the_job_here_and_each_prompt_gets_a_traceable_pair(
    settings, vllm_generator, campaign: Campaign, prompts: list[Prompt]
) -> None:
    settings.GENERATION_BACKEND = "vllm"
    out = generate_pairs("--campaign", campaign.name, "--limit", "3", "--max-tokens", "32", "--wait")

    job = GenerationJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED and f"job {job.pk} succeeded" in out
    campaign.refresh_from_db()
    assert job.policy == campaign.active_policy  # the base model, registered on first use
    assert Comparison.objects.count() == 3
    for completion in Completion.objects.all():
        assert completion.token_ids and completion.seed is not None and completion.model_version_id == job.policy_id


@pytest.mark.django_db
def test_without_wait_the_job_is_queued_for_a_worker(
    campaign: Campaign, prompts: list[Prompt], lora_policy: ModelVersion, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        out = generate_pairs("--campaign", campaign.name, "--policy", lora_policy.name, "--seed", "7")

    job = GenerationJob.objects.get()
    assert (job.status, job.policy, job.seed) == (JobStatus.QUEUED, lora_policy, 7)
    assert f"queued generation job {job.pk}" in out and "5 prompts in 1 shards" in out
    assert len(callbacks) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--campaign", "nope"], "no campaign named 'nope'"),
        (["--campaign", "helpfulness", "--policy", "nope"], "no model version named 'nope'"),
        (["--campaign", "helpfulness", "--temperature", "0"], "temperature above 0"),
    ],
)
def test_bad_arguments_stop_with_a_message(campaign: Campaign, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        generate_pairs(*args)
    assert not GenerationJob.objects.exists()

"""Reruns are idempotent: only prompts without a pair from the policy, a fresh seed per job, no duplicate pairs."""

import pytest

from generation import services
from generation.models import GenerationJob, JobStatus, ModelVersion
from labeling.models import Campaign, Comparison, ComparisonStatus, Prompt
from tests.generation.conftest import import_prompts

pytestmark = pytest.mark.django_db


def create(campaign: Campaign, policy: ModelVersion, **options) -> GenerationJob:
    return services.generation_job_create(campaign=campaign, policy=policy, max_tokens=16, **options)


@pytest.mark.slow
def test_generating_again_samples_only_the_new_prompt_and_each_prompt_has_one_pair(
    settings, vllm_generator, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_BACKEND = "vllm"
    first = services.generation_job_run(job=create(campaign, policy))
    import_prompts(campaign, [{"prompt": "Describe a lighthouse at night."}])
    second = services.generation_job_run(job=create(campaign, policy))

    assert (first.total, second.total, second.status) == (5, 1, JobStatus.SUCCEEDED)
    assert first.seed != second.seed  # each job draws its own seed, recorded
    assert Comparison.objects.count() + first.skipped_identical + second.skipped_identical == 6
    assert Comparison.objects.order_by().values("prompt").distinct().count() == Comparison.objects.count()  # one pair each


@pytest.mark.slow
def test_a_forced_resample_with_the_same_seed_stores_no_duplicate_pairs(
    settings, vllm_generator, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_BACKEND = "vllm"
    first = services.generation_job_run(job=create(campaign, policy, seed=11))
    again = services.generation_job_run(job=create(campaign, policy, seed=11, only_missing=False))
    fresh = services.generation_job_run(job=create(campaign, policy, only_missing=False))

    paired = first.done - first.skipped_identical
    assert again.total == 5 and again.duplicates == paired  # byte-identical texts: counted, not stored
    assert fresh.seed != 11 and fresh.duplicates == 0
    assert Comparison.objects.count() == paired + (fresh.done - fresh.skipped_identical)


def test_only_missing_leaves_out_prompts_paired_by_the_same_policy_or_ab_pair(
    campaign: Campaign, prompts: list[Prompt], policy: ModelVersion, lora_policy: ModelVersion
) -> None:
    from generation.models import Completion

    enabled = list(Prompt.objects.filter(campaign=campaign, enabled=True))

    def pair(prompt: Prompt, a: ModelVersion, b: ModelVersion, status: str = ComparisonStatus.OPEN) -> None:
        ca, cb = (Completion.objects.create(prompt=prompt, model_version=v, text=v.name, backend="vllm") for v in (a, b))
        Comparison.objects.create(prompt=prompt, completion_a=ca, completion_b=cb, status=status)

    pair(enabled[0], policy, policy)
    pair(enabled[1], policy, policy, ComparisonStatus.RETIRED)  # retired: neither open nor settled
    pair(enabled[2], policy, lora_policy, ComparisonStatus.COMPLETE)

    def todo(**options) -> set[int]:
        return set(services.selectors.prompts_to_sample(campaign=campaign, **options).values_list("pk", flat=True))

    everything = {p.pk for p in enabled}
    assert todo(policy=policy) == everything - {enabled[0].pk}
    assert todo(policy=lora_policy, policy_b=policy) == everything - {enabled[2].pk}  # either side order
    assert todo(policy=lora_policy) == everything
    assert todo(policy=policy, only_missing=False) == everything
    assert len(todo(policy=policy, limit=2)) == 2


def test_the_api_and_the_command_take_the_same_options(
    admin_user, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    import io

    from django.core.management import CommandError, call_command
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(admin_user)
    body = {"campaign": campaign.pk, "policy": policy.pk, "only_missing": False, "limit": 2}
    response = client.post(reverse("generation-api:job-start"), body, "application/json")
    assert response.status_code == 201, response.content
    assert (response.json()["only_missing"], response.json()["total"]) == (False, 2)

    call_command("generate_pairs", "--campaign", campaign.name, "--policy", policy.name, "--resample", stdout=io.StringIO())
    assert GenerationJob.objects.order_by("-pk").first().only_missing is False
    with pytest.raises(CommandError, match="--top-p: "):
        call_command("generate_pairs", "--campaign", campaign.name, "--top-p", "2", stdout=io.StringIO())

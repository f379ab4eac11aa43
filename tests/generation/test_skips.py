"""Per-prompt failures stay per prompt: over-long prompts are skipped (or truncated) and named; the job goes on."""

import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from generation import backends, services
from generation.models import Completion, GenerationSkip, JobStatus, ModelVersion
from labeling.models import Campaign, Comparison, Prompt
from tests.generation.conftest import demo_lines, import_prompts

LONG = " ".join(f"word{i}" for i in range(700))  # well over the tiny model's 512-token context
TOO_LONG = re.compile(r"too long: [\d,]+ tokens, and the policy's context holds 512")


@pytest.fixture
def vllm_backend(settings, vllm_generator):
    settings.GENERATION_BACKEND = "vllm"
    return vllm_generator


@pytest.mark.slow
@pytest.mark.django_db
def test_an_over_long_prompt_is_skipped_and_named_and_the_rest_of_the_job_succeeds(
    vllm_backend, settings, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_CHUNK_SIZE = 2
    import_prompts(campaign, [{"prompt": LONG, "priority": 9}])
    long_prompt = Prompt.objects.get(campaign=campaign, priority=9)

    job = services.generation_job_run(
        job=services.generation_job_create(campaign=campaign, policy=policy, seed=3, max_tokens=16)
    )

    assert (job.status, job.done, job.total, job.skipped) == (JobStatus.SUCCEEDED, 6, 6, 1)
    skip = GenerationSkip.objects.get()
    assert skip.prompt == long_prompt and skip.job == job and TOO_LONG.fullmatch(skip.reason)
    assert not Completion.objects.filter(prompt=long_prompt).exists()
    assert Comparison.objects.count() + job.skipped_identical == 5
    # A rerun does not try it again (skipped for this job, not failed).
    assert services.generation_job_run(job=job).skipped == 1


@pytest.mark.slow
@pytest.mark.django_db
def test_the_transformers_backend_skips_the_same_prompt(
    settings, transformers_generator, campaign: Campaign, policy: ModelVersion
) -> None:
    settings.GENERATION_BACKEND = "transformers"
    import_prompts(campaign, [*demo_lines(2), {"prompt": LONG}])
    job = services.generation_job_run(
        job=services.generation_job_create(campaign=campaign, policy=policy, seed=3, max_tokens=8)
    )
    assert (job.status, job.done, job.skipped) == (JobStatus.SUCCEEDED, 3, 1)
    assert TOO_LONG.fullmatch(GenerationSkip.objects.get().reason)


def test_truncation_drops_the_earliest_turns_but_never_the_last_user_turn(tiny_model_path) -> None:
    base = str(tiny_model_path)
    last = {"role": "user", "content": "Tell me about trains."}
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": LONG},
        last,
    ]
    with pytest.raises(backends.PromptRejected, match=TOO_LONG):
        backends.encode_within(chat, base_path=base, context=512)
    kept = backends.encode_within(chat, base_path=base, context=512, truncate=True)
    assert kept == backends.encode([chat[0], last], base_path=base)  # the system message stays
    # Only the last user turn left, and still too long: skipped, not cut inside the turn.
    with pytest.raises(backends.PromptRejected, match=TOO_LONG):
        backends.encode_within([*chat[:4], {"role": "user", "content": LONG}], base_path=base, context=512, truncate=True)
    assert backends.prompt_lengths([chat, "plain"], base_path=base) == [
        len(backends.encode(chat, base_path=base)),
        len(backends.encode("plain", base_path=base)),
    ]


@pytest.mark.slow
@pytest.mark.django_db
def test_a_campaign_that_truncates_samples_a_long_chat_from_its_last_turns(
    vllm_backend, campaign: Campaign, policy: ModelVersion
) -> None:
    campaign.truncate_long_prompts = True
    campaign.save(update_fields=["truncate_long_prompts"])
    fits = [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Tell me about trains."},
    ]
    never = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": LONG}]
    import_prompts(campaign, [{"messages": fits}, {"messages": never}])
    job = services.generation_job_run(
        job=services.generation_job_create(campaign=campaign, policy=policy, seed=4, max_tokens=8)
    )
    assert (job.status, job.done, job.skipped) == (JobStatus.SUCCEEDED, 2, 1)
    assert GenerationSkip.objects.get().prompt.messages == never
    assert Completion.objects.filter(prompt__messages=fits).count() == 2


@pytest.fixture
def measured_campaign(campaign: Campaign, policy: ModelVersion) -> Campaign:
    """The campaign with the tiny policy active: imports measure its prompts against that context."""
    campaign.active_policy = policy
    campaign.save(update_fields=["active_policy"])
    return campaign


def jsonl(lines: list[dict]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.mark.django_db
def test_import_warns_with_line_numbers_about_prompts_longer_than_the_policys_context(
    measured_campaign: Campaign, tmp_path
) -> None:
    campaign = measured_campaign
    path = tmp_path / "prompts.jsonl"
    path.write_text(jsonl([{"prompt": "Short one."}, {"prompt": LONG}, {"prompt": "Short two."}, {"prompt": LONG + " again"}]))
    out, err = io.StringIO(), io.StringIO()

    call_command("import_prompts", str(path), "--campaign", campaign.name, "--quiet", stdout=out, stderr=err)

    assert "imported 4 prompts" in out.getvalue()
    assert "2 prompts of prompts.jsonl are longer than policy tiny-base's context (512 tokens" in err.getvalue()
    assert err.getvalue().rstrip().endswith("lines 2, 4")


@pytest.mark.django_db
def test_the_admins_upload_warns_with_line_numbers_about_prompts_longer_than_the_policys_context(
    measured_campaign: Campaign, admin_client
) -> None:
    campaign = measured_campaign
    upload = SimpleUploadedFile("hh.jsonl", jsonl([{"prompt": "Short one."}, {"prompt": LONG}, {"prompt": "Short two."}]).encode())

    response = admin_client.post(
        reverse("admin:labeling_prompt_upload"), {"campaign": campaign.pk, "file": upload}, follow=True
    )

    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert ("success", f"Imported 3 prompts from hh.jsonl (JSONL (prompt text)) into {campaign}; skipped 0 duplicates.") in shown
    assert (
        "warning",
        "Warning: 1 prompt of hh.jsonl is longer than policy tiny-base's context (512 tokens; the generation skips "
        "them): line 2.",
    ) in shown


@pytest.mark.django_db
def test_import_into_a_campaign_without_a_policy_yet_is_measured_against_the_model_its_first_job_uses(
    campaign: Campaign, settings, tiny_model_path, tmp_path
) -> None:
    settings.POLICY_MODEL = str(tiny_model_path)
    path = tmp_path / "prompts.jsonl"
    path.write_text(jsonl([{"prompt": "Short one."}, {"prompt": LONG}]))
    err = io.StringIO()

    call_command("import_prompts", str(path), "--campaign", campaign.name, "--quiet", stdout=io.StringIO(), stderr=err)

    assert (
        f"1 prompt of prompts.jsonl is longer than the context of {tiny_model_path.name} (512 tokens; POLICY_MODEL, "
        "which the campaign's first generation job uses; the generation skips them): line 2" in err.getvalue()
    )
    campaign.refresh_from_db()
    assert campaign.active_policy is None and not ModelVersion.objects.exists()  # measuring registered nothing
    # A POLICY_MODEL that is no folder here (a hub id this machine cannot load) measures nothing.
    settings.POLICY_MODEL = "HuggingFaceTB/SmolLM2-360M-Instruct"
    err = io.StringIO()
    path.write_text(jsonl([{"prompt": LONG + " more"}]))
    call_command("import_prompts", str(path), "--campaign", campaign.name, "--quiet", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""

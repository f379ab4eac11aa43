"""What a promotion queues: new pairs from the new policy, and an A/B job against the policy it replaced on
a share of the held-out prompts. The round keeps the jobs' ids; nothing runs here (the jobs stay queued)."""

import math

import pytest

from generation.models import GenerationJob, ModelVersion
from labeling.models import Prompt, Split
from training import services
from training.models import RoundStatus, TrainingRound

pytestmark = pytest.mark.django_db


def promote(campaign, tiny_policy, tmp_path, **config) -> TrainingRound:
    training_round = TrainingRound.objects.create(
        campaign=campaign,
        number=1,
        start_version=tiny_policy,
        reference_version=tiny_policy,
        status=RoundStatus.EVALUATING,
        config=config,
    )
    assert services._round_promote(
        round_id=training_round.pk, eval_results={"pairs": 3}, log_tail="", model_dir=str(tmp_path / "adapter")
    )
    training_round.refresh_from_db()
    return training_round


def test_promotion_queues_regeneration_and_an_ab_job_on_held_out_prompts(
    campaign, pairs, tiny_policy, tmp_path, django_capture_on_commit_callbacks
):
    for i in range(5):
        pairs.prompt(text=f"held out {i}", split=Split.HELDOUT)
        pairs.prompt(text=f"train {i}")

    with django_capture_on_commit_callbacks():
        training_round = promote(campaign, tiny_policy, tmp_path, regenerate=True, ab_share=0.5)

    jobs = training_round.eval_results["queued_jobs"]
    assert training_round.eval_results["pairs"] == 3 and set(jobs) == {"regenerate", "ab"}
    regenerate, ab = GenerationJob.objects.get(pk=jobs["regenerate"]), GenerationJob.objects.get(pk=jobs["ab"])
    new = training_round.output_version
    assert (regenerate.policy, regenerate.policy_b, regenerate.total) == (new, None, 10)
    assert (ab.policy, ab.policy_b, ab.total) == (new, tiny_policy, math.ceil(0.5 * 5))
    sampled = Prompt.objects.filter(pk__in=[pk for shard in ab.shards.all() for pk in shard.prompt_ids])
    assert {p.split for p in sampled} == {Split.HELDOUT}


def test_no_regeneration_and_a_zero_share_queue_nothing(campaign, pairs, tiny_policy, tmp_path):
    pairs.prompt(text="held out", split=Split.HELDOUT)

    training_round = promote(campaign, tiny_policy, tmp_path, regenerate=False, ab_share=0.0)

    assert training_round.eval_results["queued_jobs"] == {} and not GenerationJob.objects.exists()
    assert ModelVersion.objects.filter(produced_by=training_round).exists()


def test_round_start_freezes_the_ab_share_setting_into_its_config(campaign, tiny_policy, settings):
    settings.TRAINING_AB_SHARE = 0.25

    training_round = services.round_start(campaign=campaign)

    assert training_round.config["ab_share"] == 0.25

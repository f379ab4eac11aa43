"""DPO rounds end to end: real TRL in the worker process, the real database, the real gate."""

import json
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from config.celery import app as celery_app
from generation.models import Completion, GenerationJob, ModelVersion
from labeling.models import Campaign, Split
from tests.waiting import wait_until
from training import export, runner, selectors, services, tasks
from training.config import RoundConfig
from training.export import AggregationPolicy
from training.dpo_worker import EVENT_PREFIX
from training.models import RoundMetric, RoundStatus, TrainingRound

# Small and learnable: the chosen answer always reads well, the rejected one never does. The gate decides
# on 12 held-out pairs here (a deployment needs TRAINING_GATE_MIN_HELDOUT_PAIRS, 50 by default).
FAST = {
    "learning_rate": 5e-3,
    "batch_size": 4,
    "eval_prompts": 2,
    "eval_max_new_tokens": 16,
    "regenerate": False,
    "ab_share": 0.0,
    "gate_min_heldout_pairs": 12,
}
TOPICS = ["the sea", "a red kite", "bread", "the moon", "a summer storm", "running", "a library", "snow"]


def add_pairs(pairs, *, n_train: int = 8, n_heldout: int = 12, heldout_reversed: bool = False) -> None:
    for i in range(n_train):
        topic = TOPICS[i % len(TOPICS)]
        pairs.pair(
            votes=["a"], text=f"Tell me about {topic}. ({i})", a=f"{topic.capitalize()} is lovely.", b="sea sea sea"
        )
    for i in range(n_heldout):
        topic = TOPICS[i % len(TOPICS)]
        # The bad answer is shorter on half the pairs and longer on the other half, so the length-controlled
        # accuracy the gate uses measures taste, not length.
        good, bad = f"I like {topic}.", "sea sea" if i % 2 else "sea sea sea sea sea sea sea sea"
        a, b = (bad, good) if heldout_reversed else (good, bad)
        pairs.pair(votes=["a"], text=f"Describe {topic}. ({i})", a=a, b=b, split=Split.HELDOUT)


def run(training_round: TrainingRound) -> TrainingRound:
    services.round_execute(round_id=training_round.pk)
    training_round.refresh_from_db()
    return training_round


# --- whole rounds (slow: each trains in a worker process) ---------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_round_started_from_the_admin_is_promoted_and_the_next_generation_job_samples_from_it(
    client,
    campaign,
    pairs,
    tiny_policy,
    admin_user,
    artifacts,
    settings,
    eager_celery,
    django_capture_on_commit_callbacks,
):
    settings.GENERATION_BACKEND = "transformers"  # the vLLM engine is covered by generation's tests
    settings.TRAINING_GATE_MIN_HELDOUT_PAIRS = 12
    settings.TRAINING_AB_SHARE = 0.5
    add_pairs(pairs)
    client.force_login(admin_user)
    changelist = reverse("admin:labeling_campaign_changelist")
    action = {"action": "start_dpo_round", "_selected_action": [campaign.pk]}
    form = client.post(changelist, action)
    assert form.status_code == 200 and not TrainingRound.objects.exists()  # the config form comes first
    config = {name: field.initial for name, field in form.context["form"].fields.items() if field.initial is not None}
    config["lora"] = "on"
    config["gate_tolerance"] = "0.25"  # the gate's knobs are the admin's to set

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(changelist, {**action, **config, "apply": "1"}, follow=True)

    assert response.status_code == 200
    training_round = TrainingRound.objects.get()
    assert training_round.config["beta"] == 0.1 and training_round.config["lora"] is True
    assert training_round.config["gate_tolerance"] == 0.25 and training_round.eval_results["gate"]["tolerance"] == 0.25
    assert training_round.status == RoundStatus.PROMOTED, training_round.error or training_round.log_tail
    assert training_round.created_by == admin_user
    results = training_round.eval_results
    gate = results["gate"]
    assert results["pairs"] == 12 and results["accuracy"] >= 0.5 and gate["passed"], gate["reason"]
    assert gate["pairs"] == 12 and gate["candidate_lower"] > 0.5 and gate["incumbent_accuracy"] == 0.5
    assert results["samples"] == 8 and results["mean_length"] > 0 and results["kl"] is not None
    # The last KL check saw the very weights saved: the gate's estimate is that check's, not sampled again.
    last = results["kl_checks"][-1]
    assert last["within"] and results["kept_step"] == last["step"] and results["kl"] == last["kl"]
    assert training_round.snapshot.row_count == 8 and training_round.heldout_snapshot.row_count == 12
    assert training_round.progress == 1.0

    steps = list(RoundMetric.objects.filter(round=training_round).order_by("step"))
    assert [m.step for m in steps] == [1]  # 8 pairs, batch 8, one epoch
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen"):
        assert key in steps[0].values

    version = training_round.output_version
    assert (version.base_path, version.parent) == (tiny_policy.base_path, tiny_policy)
    assert (Path(version.adapter_path) / "adapter_config.json").is_file()
    assert Path(version.adapter_path).is_relative_to(artifacts.resolve())
    campaign.refresh_from_db()
    assert campaign.active_policy == version

    queued = training_round.eval_results["queued_jobs"]
    job = GenerationJob.objects.get(pk=queued["regenerate"])
    assert job.policy == version and job.status == "succeeded", job.error
    assert Completion.objects.filter(job=job, model_version=version).count() == 2 * campaign.prompts.count()
    # The form's A/B share (TRAINING_AB_SHARE, 0.5): half of the 12 held-out prompts, new policy against old.
    ab = GenerationJob.objects.get(pk=queued["ab"])
    assert (ab.policy, ab.policy_b, ab.total, ab.status) == (version, tiny_policy, 6, "succeeded"), ab.error
    assert Completion.objects.filter(job=ab, model_version=tiny_policy).count() == 6


@pytest.mark.slow
@pytest.mark.django_db
def test_later_rounds_train_from_the_promoted_policy(campaign, pairs, tiny_policy, artifacts):
    add_pairs(pairs)
    first = run(services.round_start(campaign=campaign, config=RoundConfig.from_dict(FAST)))
    assert first.status == RoundStatus.PROMOTED, first.error or first.log_tail
    # This test is about lineage: the gate's bounds and KL budget are tested on their own (full fine-tuning
    # at this rate overshoots: round 3 measured a KL of 64 nats and a lower bound of 0.47 on 12 pairs).
    later = {**FAST, "gate_tolerance": 1.0, "kl_budget": 1e6, "gate_min_accuracy": 0.0}

    # Round 2 continues the LoRA adapter, against the previous policy as reference.
    second = run(services.round_start(campaign=campaign, config=RoundConfig.from_dict(later)))
    assert second.status == RoundStatus.PROMOTED, second.error or second.log_tail
    assert second.start_version == second.reference_version == first.output_version
    # Paired: round 1's policy, now the incumbent, is scored again on the same pairs against the same base.
    assert second.eval_results["gate"]["incumbent_accuracy"] == first.eval_results["gate"]["candidate_accuracy"]
    assert second.output_version.parent == first.output_version
    assert second.output_version.base_path == tiny_policy.base_path

    # Round 3 fine-tunes full weights (the adapter merged in), against the initial model.
    third = run(
        services.round_start(
            campaign=campaign, config=RoundConfig.from_dict({**later, "lora": False, "reference": "initial"})
        )
    )
    assert third.status == RoundStatus.PROMOTED, third.error or third.log_tail
    assert (third.start_version, third.reference_version) == (second.output_version, tiny_policy)
    full = third.output_version
    assert full.adapter_path == "" and (Path(full.base_path) / "model.safetensors").is_file()
    campaign.refresh_from_db()
    assert campaign.active_policy == full


@pytest.mark.slow
@pytest.mark.django_db
def test_a_waiting_warm_worker_runs_the_next_round(campaign, pairs, tiny_policy, artifacts, settings):
    settings.TRAINING_LAUNCHER = ""
    add_pairs(pairs)
    runner.warm_start(cwd=Path(settings.BASE_DIR), wait=True)
    warm = runner._warm

    training_round = run(services.round_start(campaign=campaign, config=RoundConfig.from_dict(FAST)))

    assert training_round.status == RoundStatus.PROMOTED, training_round.error or training_round.log_tail
    # The waiting worker took the round and ran it to the end; none is left waiting.
    assert runner._warm is None and warm.poll() == 0


def test_a_waiting_warm_worker_ends_when_its_celery_worker_shuts_down(settings):
    # It runs in a session of its own, so a supervisor's SIGTERM to the worker's group misses it.
    runner.warm_start(cwd=Path(settings.BASE_DIR))
    warm = runner._warm
    tasks._stop_warm_worker(sender=None)  # the worker_shutdown signal's receiver
    assert runner._warm is None and warm.poll() is not None


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_over_its_kl_budget_at_every_point_goes_back_to_its_start_and_is_not_promoted(
    campaign, pairs, tiny_policy, artifacts
):
    add_pairs(pairs, n_train=16)  # batch 4: 4 steps, points of the KL budget at steps 2 and 4

    training_round = run(services.round_start(
        campaign=campaign, config=RoundConfig.from_dict({**FAST, "learning_rate": 0.05, "kl_budget": 0.0, "kl_checks": 2})
    ))

    assert training_round.status == RoundStatus.GATED, training_round.error or training_round.log_tail
    results = training_round.eval_results
    assert [(c["step"], c["within"]) for c in results["kl_checks"]] == [(4, False), (2, False)]  # the end first
    assert all(c["kl"] > 0 for c in results["kl_checks"]) and results["kept_step"] == 0
    assert results["gate"]["reason"] == "no training step stayed within the KL budget: the candidate is its starting policy"
    assert abs(results["kl"]) < 1e-3  # what was saved and evaluated is the start: a fresh adapter is zero
    assert "no point of the round within the KL budget: the candidate is its start" in training_round.log_tail
    assert list(training_round.metrics.values_list("step", flat=True).order_by("step")) == [1, 2, 3, 4]
    assert training_round.output_version is None


@pytest.mark.slow
@pytest.mark.django_db
def test_gated_out_round_changes_nothing_that_serves(campaign, pairs, tiny_policy, artifacts):
    add_pairs(pairs, heldout_reversed=True)  # held-out humans prefer what training learns to avoid
    versions = set(ModelVersion.objects.values_list("pk", flat=True))

    training_round = run(services.round_start(campaign=campaign, config=RoundConfig.from_dict(FAST)))

    assert training_round.status == RoundStatus.GATED, training_round.error or training_round.log_tail
    assert training_round.eval_results["accuracy"] < 0.5
    assert training_round.eval_results["gate"]["passed"] is False
    assert training_round.eval_results["gate"]["verdict"] == "reject"
    assert training_round.output_version is None
    assert set(ModelVersion.objects.values_list("pk", flat=True)) == versions
    campaign.refresh_from_db()
    assert campaign.active_policy == tiny_policy
    assert not GenerationJob.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_drops_low_posterior_pairs_and_trains_the_rest_with_per_pair_smoothing(
    campaign, pairs, tiny_policy, artifacts
):
    campaign.annotations_per_pair = 3
    campaign.save(update_fields=["annotations_per_pair"])
    # Three judges agree on most pairs; on every third one, the third judge dissents.
    def votes(i: int) -> list[str]:
        return ["a", "a", "b"] if i % 3 == 0 else ["a", "a", "a"]

    for i, topic in enumerate(TOPICS):
        pairs.pair(votes=votes(i), text=f"Tell me about {topic}.", a=f"{topic.capitalize()} is lovely.", b="sea sea sea")
    for i in range(12):
        pairs.pair(votes=votes(i), text=f"Describe {TOPICS[i % 8]}. ({i})", a="I like it.", b="sea", split=Split.HELDOUT)
    rows = [
        row
        for split in (Split.TRAIN, Split.HELDOUT)
        for row in export.preference_rows(campaign=campaign, split=split, policy=AggregationPolicy(), conversational=True)
    ]
    split_posterior = max(r["posterior"] for r in rows if r["votes_b"])
    threshold = (split_posterior + min(r["posterior"] for r in rows if not r["votes_b"])) / 2
    assert split_posterior < threshold  # the dissented pairs are the less certain ones, in both splits

    training_round = run(
        services.round_start(
            campaign=campaign,
            config=RoundConfig.from_dict(
                {**FAST, "gate_min_heldout_pairs": 8, "min_posterior": threshold, "posterior_smoothing": True}
            ),
        )
    )

    assert training_round.status in (RoundStatus.PROMOTED, RoundStatus.GATED), training_round.error
    assert f"kept 5 training pairs, dropped 3 with a posterior below {threshold}" in training_round.log_tail
    assert training_round.metrics.filter(step=1).exists()
    # The gate reads the same confident labels: the 4 dissented held-out pairs are not its evidence.
    assert f"kept 8 held-out pairs, dropped 4 with a posterior below {threshold}" in training_round.log_tail
    assert training_round.eval_results["gate"]["pairs"] == 8


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_on_two_heldout_pairs_is_never_promoted(campaign, pairs, tiny_policy, artifacts, settings):
    settings.TRAINING_GATE_MIN_HELDOUT_PAIRS = 50
    add_pairs(pairs, n_heldout=2)

    training_round = run(services.round_start(campaign=campaign, config=RoundConfig.from_dict(
        {k: v for k, v in FAST.items() if k != "gate_min_heldout_pairs"}
    )))

    assert training_round.status == RoundStatus.NOT_EVALUATED, training_round.error or training_round.log_tail
    gate = training_round.eval_results["gate"]
    assert (gate["verdict"], gate["pairs"], gate["min_pairs"]) == ("not_evaluated", 2, 50)
    assert "2 held-out pairs, at least 50 needed" in training_round.log_tail
    assert training_round.output_version is None and training_round.finished_at is not None
    campaign.refresh_from_db()
    assert campaign.active_policy == tiny_policy


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_the_admin_lets_decide_on_one_heldout_pair_is_gated_not_left_evaluating(
    campaign, pairs, tiny_policy, artifacts
):
    # As the demo walk did it: ten judgments, one of them held out, the gate opened as far as the form allows.
    add_pairs(pairs, n_heldout=1)
    loose = {**FAST, "gate_min_heldout_pairs": 1, "gate_min_accuracy": 0.0, "gate_tolerance": 1.0, "kl_budget": 1e6}

    training_round = run(services.round_start(campaign=campaign, config=RoundConfig.from_dict(loose)))

    assert training_round.status == RoundStatus.GATED, training_round.error or training_round.log_tail
    assert "one held-out pair (n=1) bounds no paired difference" in training_round.eval_results["gate"]["reason"]
    campaign.refresh_from_db()
    assert campaign.active_policy == tiny_policy


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_round_stops_its_worker_and_changes_nothing(campaign, pairs, tiny_policy, artifacts):
    add_pairs(pairs, n_train=64)
    training_round = services.round_start(
        campaign=campaign, config=RoundConfig.from_dict({**FAST, "batch_size": 1, "epochs": 20})
    )
    worker = threading.Thread(target=lambda: (services.round_execute(round_id=training_round.pk), connection.close()))
    worker.start()
    # Training has begun.
    wait_until(RoundMetric.objects.filter(round=training_round).exists, what="the worker's first step", within_s=120)

    assert services.round_cancel(training_round=training_round)
    worker.join(timeout=60)

    assert not worker.is_alive()
    training_round.refresh_from_db()
    assert training_round.status == RoundStatus.CANCELLED
    assert training_round.output_version is None
    assert training_round.progress < 1.0
    campaign.refresh_from_db()
    assert campaign.active_policy == tiny_policy


@pytest.mark.django_db
def test_failed_worker_marks_the_round_failed_and_changes_nothing(campaign, pairs, tiny_policy, artifacts, settings):
    add_pairs(pairs, n_train=2, n_heldout=1)
    settings.TRAINING_LAUNCHER = f"{sys.executable} -c 'import sys; print(\"boom\"); sys.exit(3)'"

    training_round = run(services.round_start(campaign=campaign))

    assert training_round.status == RoundStatus.FAILED
    assert "status 3" in training_round.error
    assert "boom" in training_round.log_tail
    campaign.refresh_from_db()
    assert campaign.active_policy == tiny_policy


@pytest.mark.django_db
def test_round_without_training_preferences_fails_before_training(campaign, pairs, tiny_policy, artifacts):
    pairs.pair(votes=["tie"])

    training_round = run(services.round_start(campaign=campaign))

    assert training_round.status == RoundStatus.FAILED
    assert training_round.error == "no training preferences to train on"
    assert training_round.snapshot.row_count == 0


# --- starting, scheduling, cancelling ---------------------------------------------------------


@pytest.mark.django_db
def test_round_starts_from_the_active_policy_with_the_gate_frozen_into_its_config(campaign, tiny_policy, settings):
    settings.TRAINING_GATE_MIN_ACCURACY = 0.6
    settings.TRAINING_GATE_MIN_HELDOUT_PAIRS = 80
    settings.TRAINING_KL_BUDGET = 3.5

    training_round = services.round_start(campaign=campaign)

    assert (training_round.number, training_round.status) == (1, RoundStatus.QUEUED)
    assert training_round.start_version == training_round.reference_version == tiny_policy
    assert training_round.config["gate_min_accuracy"] == 0.6
    assert training_round.config["gate_min_heldout_pairs"] == 80 and training_round.config["kl_budget"] == 3.5
    assert training_round.config["beta"] == 0.1


@pytest.mark.django_db
def test_round_start_enqueues_the_task_on_the_training_queue_after_commit(
    campaign, tiny_policy, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        services.round_start(campaign=campaign)

    assert len(callbacks) == 1
    assert celery_app.amqp.router.route({}, tasks.round_run.name)["queue"].name == "training"


@pytest.mark.django_db
def test_a_round_started_without_enqueue_sends_no_task_and_waits_queued(
    campaign, tiny_policy, django_capture_on_commit_callbacks
):
    # For a harness that runs the task body itself (round_run.apply()), never touching Celery's eager mode.
    with django_capture_on_commit_callbacks() as callbacks:
        training_round = services.round_start(campaign=campaign, enqueue=False)

    assert callbacks == [] and training_round.status == RoundStatus.QUEUED


@pytest.mark.django_db
def test_second_round_is_refused_while_one_is_active(campaign, tiny_policy):
    services.round_start(campaign=campaign)

    with pytest.raises(services.RoundAlreadyActive):
        services.round_start(campaign=campaign)
    assert TrainingRound.objects.count() == 1


@pytest.mark.django_db
def test_a_finished_round_frees_the_campaign_for_the_next_number(campaign, tiny_policy):
    first = services.round_start(campaign=campaign)
    services.round_cancel(training_round=first)

    second = services.round_start(campaign=campaign)

    assert second.number == 2


@pytest.mark.django_db
def test_executing_a_round_twice_does_nothing_the_second_time(campaign, tiny_policy):
    training_round = services.round_start(campaign=campaign)
    services.round_cancel(training_round=training_round)

    assert services.round_execute(round_id=training_round.pk) is None
    training_round.refresh_from_db()
    assert training_round.status == RoundStatus.CANCELLED


@pytest.mark.django_db
def test_cancel_only_applies_to_active_rounds(campaign, tiny_policy):
    training_round = services.round_start(campaign=campaign)

    assert services.round_cancel(training_round=training_round) is True
    assert services.round_cancel(training_round=training_round) is False


@pytest.mark.django_db
def test_scheduler_starts_a_round_only_with_enough_new_preferences(campaign, pairs, tiny_policy):
    pairs.pair(votes=["a"])
    assert services.round_start_if_due(campaign=campaign, min_new_preferences=2) is None
    pairs.pair(votes=["b"], text="another")

    training_round = services.round_start_if_due(campaign=campaign, min_new_preferences=2)

    assert training_round is not None and training_round.config["regenerate"] is True
    assert services.round_start_if_due(campaign=campaign, min_new_preferences=2) is None  # one is running


@pytest.mark.django_db
def test_preferences_judged_before_the_last_round_are_not_new(campaign, pairs, tiny_policy, settings):
    settings.LABELING_UNDO_WINDOW_S = 0  # so a pair answered after the round is settled at once
    pairs.pair(votes=["a"])
    pairs.pair(votes=["a"], text="second")
    services.round_cancel(training_round=services.round_start(campaign=campaign))
    assert services.round_start_if_due(campaign=campaign, min_new_preferences=1) is None

    pairs.pair(votes=["b"], text="third", answered_ago=timedelta(0))

    assert services.round_start_if_due(campaign=campaign, min_new_preferences=1) is not None


@pytest.mark.django_db
def test_a_pair_still_in_its_undo_window_when_the_last_round_started_is_new(campaign, pairs, tiny_policy, settings):
    settings.LABELING_UNDO_WINDOW_S = 10
    pairs.pair(votes=["a"], text="answered 15 s ago", answered_ago=timedelta(seconds=15))
    pairs.pair(votes=["a"], text="answered an hour ago")
    training_round = services.round_start(campaign=campaign)
    services.round_cancel(training_round=training_round)
    # The round started 10 s ago, 5 s after the first pair's answer: that pair was not settled then.
    TrainingRound.objects.filter(pk=training_round.pk).update(created_at=timezone.now() - timedelta(seconds=10))

    assert selectors.preferences_new_count(campaign=campaign, policy=AggregationPolicy()) == 1


@pytest.mark.django_db
def test_scheduler_counts_each_settled_comparison_once_and_unsettled_ones_not_at_all(campaign, pairs, tiny_policy):
    campaign.annotations_per_pair = 3
    campaign.save()
    pairs.pair(votes=["a", "a", "b"])  # settled: one new preference, not three
    pairs.pair(votes=["a", "a"], text="waiting for its third vote")
    pairs.pair(votes=["a", "a", "a"], sources=["human", "simulated", "simulated"], text="settled by scripts")

    assert selectors.preferences_new_count(campaign=campaign, policy=AggregationPolicy()) == 1
    assert services.round_start_if_due(campaign=campaign, min_new_preferences=2) is None


@pytest.mark.django_db
def test_retrain_task_visits_active_campaigns_with_the_configured_threshold(campaign, pairs, tiny_policy, settings):
    settings.RETRAIN_MIN_NEW_PREFERENCES = 1
    pairs.pair(votes=["a"])
    Campaign.objects.create(name="paused", is_active=False)

    started = tasks.retrain_due_campaigns()

    assert [TrainingRound.objects.get(pk=pk).campaign for pk in started] == [campaign]
    assert tasks.retrain_due_campaigns(min_new_preferences=1) == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_schedulers_firing_at_once_start_one_round(campaign, pairs, tiny_policy):
    pairs.pair(votes=["a"])
    barrier = threading.Barrier(2)
    started = []

    def fire() -> None:
        barrier.wait()
        started.append(services.round_start_if_due(campaign=campaign, min_new_preferences=1))
        connection.close()

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert TrainingRound.objects.count() == 1
    assert sum(r is not None for r in started) == 1


@pytest.mark.django_db
def test_retraining_schedule_is_a_periodic_task_editable_in_the_admin():
    task = PeriodicTask.objects.get(task="training.tasks.retrain_due_campaigns")

    assert task.enabled and task.interval.every == 10


# --- the worker process --------------------------------------------------------------------


def test_runner_kills_the_worker_when_cancelled(tmp_path):
    script = f'import time; print({EVENT_PREFIX!r} + \'{{"event": "started"}}\', flush=True); time.sleep(600)'
    events: list[dict] = []

    with pytest.raises(runner.WorkerCancelled):
        runner.run_worker(
            command=[sys.executable, "-c", script],
            cwd=tmp_path,
            log_path=tmp_path / "worker.log",
            on_event=events.append,
            on_output=lambda line: None,
            should_cancel=lambda: bool(events),
            poll_s=0.05,
        )

    assert events == [{"event": "started"}]
    assert "started" in (tmp_path / "worker.log").read_text()


def test_worker_command_honours_the_launcher(tmp_path):
    spec = tmp_path / "spec.json"

    assert runner.worker_command(launcher="", spec_path=spec) == [
        sys.executable,
        "-m",
        "training.dpo_worker",
        str(spec),
    ]
    assert runner.worker_command(launcher="accelerate launch --config_file 'my conf.yaml'", spec_path=spec) == [
        "accelerate",
        "launch",
        "--config_file",
        "my conf.yaml",
        "-m",
        "training.dpo_worker",
        str(spec),
    ]


def test_round_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown round config keys: lr"):
        RoundConfig.from_dict({"lr": 1})
    with pytest.raises(ValueError, match="beta must be positive"):
        RoundConfig.from_dict({"beta": 0})
    assert RoundConfig.from_dict({"lora_target_modules": "q_proj,v_proj"}).lora_target_modules == ("q_proj", "v_proj")
    assert RoundConfig.from_dict(json.loads(json.dumps(RoundConfig().as_dict()))) == RoundConfig()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "config, problem",
    [
        ({"aggregation": {"min_votes": 2}}, "unknown aggregation keys: min_votes"),
        ({"aggregation": {"min_agreement": 1.5}}, "min_agreement must be between 0 and 1"),
        ({"aggregation": {"min_judgments": "2"}}, "min_judgments must be an integer"),
        ({"aggregation": []}, "aggregation must be an object"),
        ({"batch_size": 8.5}, "batch_size must be an integer, not 8.5"),
        ({"batch_size": True}, "batch_size must be an integer, not True"),
        ({"lora_target_modules": [1, 2]}, "lora_target_modules must be a list of strings"),
        ({"lora_target_modules": ["q_proj", "v proj"]}, "lora_target_modules must be module names"),
        ({"beta": "0.1"}, "beta must be a number"),
        ({"regenerate": "yes"}, "regenerate must be true or false"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"lr": 1}, "unknown round config keys: lr"),
    ],
)
def test_a_config_that_cannot_run_is_refused_with_400_before_anything_is_queued(
    campaign, admin_user, config, problem, django_capture_on_commit_callbacks
):
    policy = ModelVersion.objects.create(name="base", base_path="unused: nothing runs")
    campaign.active_policy = policy
    campaign.save()
    client = APIClient()
    client.force_authenticate(admin_user)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/api/training/rounds/", {"campaign": campaign.pk, "config": config}, format="json")
    assert response.status_code == 400
    assert problem in str(response.json()["config"])
    assert not callbacks and not TrainingRound.objects.exists()
    # The check is RoundConfig's own parsing, which the admin's form goes through too.
    with pytest.raises(ValueError, match=problem.split(",")[0]):
        RoundConfig.from_dict(config)

"""One short loop in CI: the machinery, not the win rate (that is bench/loop.py's job)."""

import json
from pathlib import Path

import pytest
from django.core.management import call_command

from config.celery import app as celery_app
from generation.models import Completion, GenerationJob
from labeling import services as labeling_services
from labeling.models import Campaign, Judgment, JudgmentSource
from simulation import loop
from training.models import RoundStatus, TrainingRound

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_wilson_interval_brackets_the_rate_and_narrows_with_more_trials():
    low, high = loop.wilson_interval(15, 20)
    assert low < 0.75 < high
    wide, narrow = loop.wilson_interval(5, 10), loop.wilson_interval(500, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def decisive(prompt: str, text_a: str, text_b: str) -> str:
    """A taste that never ties two different texts, so both splits always get pairs.

    ("shorter" tied most pairs here: at 24 new tokens most samples hit the limit,
    and a round with no held-out pair is gated.)
    """
    return "tie" if text_a == text_b else "a" if text_a < text_b else "b"


def test_run_loop_works_on_a_scratch_copy_and_closes_the_loop_there(tmp_path: Path, tiny_model_path, settings, capsys):
    settings.POLICY_MODEL = str(tiny_model_path)
    campaign, _ = labeling_services.campaign_get_or_create(name="loop", annotations_per_pair=1)
    subjects = ["the moon", "a red kite", "the ocean", "my garden", "the cat", "a tall tree", "the market", "the bridge"]
    rows = "".join(json.dumps({"prompt": f"Describe {s}.", "split": "heldout" if i % 2 == 0 else "train"}) + "\n"
                   for i, s in enumerate(subjects))
    labeling_services.prompts_import(campaign=campaign, stream=rows.splitlines(keepends=True), source="loop.jsonl")

    eager = celery_app.conf.task_always_eager
    call_command(
        "run_loop", campaign="loop", rounds=2, oracle=f"{__name__}:decisive", annotators=1, max_tokens=24, eval_samples=2,
        learning_rate=5e-3, epochs=2, gate=0.0, gate_tolerance=1.0, min_heldout_pairs=1, kl_budget=1e6, out=tmp_path, labels_per_round=7,
    )

    assert celery_app.conf.task_always_eager == eager  # the harness ran the rounds' tasks without flipping it
    # The human campaign is untouched: no pairs, no judgments, no rounds.
    assert not Judgment.objects.filter(comparison__prompt__campaign=campaign).exists()
    assert not TrainingRound.objects.filter(campaign=campaign).exists()
    scratch = Campaign.objects.exclude(pk=campaign.pk).get()
    # Members-only, its members the loop's scripts: no human annotator is offered it.
    assert not scratch.open_to_everyone
    assert set(scratch.members.values_list("username", flat=True)) == {f"sim-{scratch.pk}-1"}
    rounds = list(TrainingRound.objects.filter(campaign=scratch).order_by("number"))
    assert [r.number for r in rounds] == [1, 2]
    # Every round is regularised toward round 0 (run_loop's default reference): its drift is what the KL budget caps.
    assert rounds[1].reference_version == rounds[0].start_version == rounds[0].reference_version
    assert all(r.status in (RoundStatus.PROMOTED, RoundStatus.GATED) for r in rounds), [r.log_tail for r in rounds]
    # The rounds trained on the scripts' judgments, asked for by name, and every one of them is marked simulated.
    assert rounds[0].config["aggregation"]["sources"] == ["simulated"] and rounds[0].snapshot.row_count > 0
    judgments = Judgment.objects.filter(comparison__prompt__campaign=scratch)
    assert set(judgments.values_list("source", flat=True)) == {JudgmentSource.SIMULATED}
    # Round 2's pairs were sampled from the policy round 1 left active: the loop closed.
    jobs = list(GenerationJob.objects.filter(campaign=scratch).order_by("created_at"))
    after_first = rounds[0].output_version if rounds[0].status == RoundStatus.PROMOTED else rounds[0].start_version
    assert len(jobs) == 2 and jobs[1].policy == after_first == rounds[1].start_version
    assert Completion.objects.filter(job=jobs[1], model_version=after_first).count() >= 2
    assert [job.done for job in jobs] == [7, 7]  # --labels-per-round: 7 of the 8 prompts each round

    report = json.loads((tmp_path / "loop.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert [r["version"] for r in report["rounds"]][1] == after_first.name
    # Every judged pair was counted in the report, and each promoted policy moved away from round 0.
    assert [r["judgments"] for r in report["rounds"][1:]] == [
        judgments.filter(comparison__completion_a__job=job).count() for job in jobs
    ]
    for score, training_round in zip(report["rounds"][1:], rounds):
        if training_round.status == RoundStatus.PROMOTED:
            # Its Monte-Carlo KL over 2 samples per prompt is exactly 0 only for round 0's own weights; a
            # policy one small round away can read below 0 (-0.036 in CI on bfloat16 CPU sampling).
            assert score["kl"] != 0
    assert all(0.0 <= w <= 1.0 for w in report["win_rates"])
    assert (tmp_path / "loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "working on the scratch campaign" in out and "win rate vs 0" in out


def test_a_gated_round_leaves_the_next_new_pairs_to_learn_from(tmp_path: Path, tiny_model_path, settings):
    """Round 1 answers every prompt and is gated, so round 2's policy has answered them all already: round 2
    draws fresh pairs for them (a forced resample on its own seed), and no empty job is left behind."""
    settings.POLICY_MODEL = str(tiny_model_path)
    campaign, _ = labeling_services.campaign_get_or_create(name="stall", annotations_per_pair=1)
    rows = "".join(json.dumps({"prompt": f"Describe {s}.", "split": "heldout" if i % 2 == 0 else "train"}) + "\n"
                   for i, s in enumerate(["the moon", "a red kite", "the ocean", "my garden"]))
    labeling_services.prompts_import(campaign=campaign, stream=rows.splitlines(keepends=True), source="stall.jsonl")

    call_command(
        "run_loop", campaign="stall", rounds=2, oracle=f"{__name__}:decisive", annotators=1, max_tokens=16,
        eval_samples=1, epochs=1, gate=1.0, min_heldout_pairs=1, out=tmp_path,
    )  # fmt: skip

    scratch = Campaign.objects.exclude(pk=campaign.pk).get()
    rounds = list(TrainingRound.objects.filter(campaign=scratch).order_by("number"))
    assert rounds[0].status == RoundStatus.GATED, rounds[0].log_tail  # no accuracy bound is above 1.0
    jobs = list(GenerationJob.objects.filter(campaign=scratch).order_by("created_at"))
    assert [(job.only_missing, job.total, job.done) for job in jobs] == [(True, 4, 4), (False, 4, 4)]
    assert jobs[0].policy == jobs[1].policy == rounds[1].start_version and jobs[0].seed != jobs[1].seed
    # Round 2 trained on the new pairs too.
    assert rounds[1].snapshot.row_count > rounds[0].snapshot.row_count


def test_scoring_samples_each_policy_once_however_many_rounds_kept_it(tiny_model_path, settings, monkeypatch):
    """A gated round keeps the policy before it: scoring samples that policy once and every round it stood
    for gets the same samples (here all three rounds are round 0's policy, so each ties with round 0)."""
    from generation import services as generation_services

    settings.POLICY_MODEL, settings.GENERATION_BACKEND = str(tiny_model_path), "transformers"
    campaign, _ = labeling_services.campaign_get_or_create(name="scored")
    rows = "".join(json.dumps({"prompt": f"Describe {s}.", "split": "heldout"}) + "\n" for s in ["the moon", "a kite"])
    labeling_services.prompts_import(campaign=campaign, stream=rows.splitlines(keepends=True), source="scored.jsonl")
    root = generation_services.campaign_policy_next(campaign=campaign)
    sampled = []
    sample = loop._sample
    monkeypatch.setattr(loop, "_sample", lambda policy, *args: sampled.append(policy.pk) or sample(policy, *args))

    scores = loop.score_rounds(
        campaign=campaign,
        versions=[(0, root, "initial"), (1, root, "gated"), (2, root, "gated")],
        oracle=decisive,
        config=loop.LoopSettings(max_tokens=8, eval_samples=2),
    )

    assert sampled == [root.pk]  # round 0's samples, reused for the two rounds that kept its policy
    assert [(s.round, s.win_rate, s.kl) for s in scores] == [(0, 0.5, 0.0), (1, 0.5, 0.0), (2, 0.5, 0.0)]

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet

from generation.models import ModelVersion
from labeling.models import Campaign, JudgmentSource, Split
from training.export import AggregationPolicy, preferences_count
from training.models import RoundMetric, TrainingRound


def version_root(*, version: ModelVersion) -> ModelVersion:
    """The first policy of a chain of rounds (the campaign's initial model)."""
    seen = {version.pk}
    while version.parent_id is not None and version.parent_id not in seen:
        version = version.parent
        seen.add(version.pk)
    return version


def rounds_for_campaign(*, campaign: Campaign) -> QuerySet[TrainingRound]:
    return TrainingRound.objects.filter(campaign=campaign).select_related("output_version", "reference_version")


def round_last(*, campaign: Campaign) -> TrainingRound | None:
    return TrainingRound.objects.filter(campaign=campaign).order_by("-number").first()


def preferences_new_count(*, campaign: Campaign, policy: AggregationPolicy) -> int:
    """Training preferences judged since the campaign's last round started (all of them before its first).

    A pair answered within LABELING_UNDO_WINDOW_S before that round was not yet settled when it started
    (training.export), so that round did not take it: it counts as new too."""
    last = round_last(campaign=campaign)
    window = timedelta(seconds=settings.LABELING_UNDO_WINDOW_S)
    return preferences_count(
        campaign=campaign, split=Split.TRAIN, policy=policy, judged_after=last.created_at - window if last else None
    )


def round_evidence(*, campaign: Campaign, policy: AggregationPolicy, min_heldout_pairs: int) -> dict:
    """What a round would stand on now: settled preferences per split and source, the unsettled pairs left
    out, and whether the held-out ones are enough for the gate to decide."""
    counts: dict = {}
    for split in (Split.TRAIN, Split.HELDOUT):
        by_source = {
            source: preferences_count(
                campaign=campaign, split=split, policy=replace(policy, sources=(source,))
            )
            for source in JudgmentSource.values
        }
        settled = preferences_count(campaign=campaign, split=split, policy=policy)
        everything = preferences_count(campaign=campaign, split=split, policy=replace(policy, settled_only=False))
        counts[split] = {"settled": settled, "by_source": by_source, "unsettled": everything - settled}
    heldout = counts[Split.HELDOUT]["settled"]
    return {
        **counts,
        "sources": list(policy.sources),
        "min_heldout_pairs": min_heldout_pairs,
        "gate_can_decide": heldout >= min_heldout_pairs,
    }


def round_metrics(*, training_round: TrainingRound) -> QuerySet[RoundMetric]:
    return RoundMetric.objects.filter(round=training_round).order_by("step")


def loop_report_dir(*, campaign: Campaign) -> Path:
    """Where `run_loop` (the simulation harness) keeps a campaign's latest loop report; the rounds page shows it."""
    return Path(settings.ARTIFACTS_DIR) / "loop" / f"campaign-{campaign.pk}"


def loop_report_read(*, campaign: Campaign) -> dict | None:
    path = loop_report_dir(campaign=campaign) / "loop.json"
    return json.loads(path.read_text()) if path.exists() else None

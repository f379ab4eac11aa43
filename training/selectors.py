import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from generation.models import ModelVersion
from labeling.models import Campaign, ComparisonStatus, Judgment, JudgmentSource, Split
from training.export import OUTCOMES, AggregationPolicy, preferences_count, preferences_outcomes
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


def round_evidence(
    *, campaign: Campaign, policy: AggregationPolicy, min_heldout_pairs: int, as_of: datetime | None = None
) -> dict:
    """What a round would stand on now (or `as_of`): per split, the settled preferences (`settled`, also per source), and
    every other comparison of the split with the reason it gives no row (`dropped`, keys of
    training.export.OUTCOMES; `unsettled` is one of them); and whether the held-out ones are enough for the
    gate to decide."""
    as_of = as_of or timezone.now()  # every count below at the same instant
    counts: dict = {}
    for split in (Split.TRAIN, Split.HELDOUT):
        outcomes = preferences_outcomes(campaign=campaign, split=split, policy=policy, as_of=as_of)
        by_source = {
            source: preferences_count(
                campaign=campaign, split=split, policy=replace(policy, sources=(source,)), as_of=as_of
            )
            for source in JudgmentSource.values
        }
        settled = outcomes.pop("kept")
        counts[split] = {
            "settled": settled,
            "by_source": by_source,
            "unsettled": outcomes["unsettled"],
            "dropped": outcomes,
            "comparisons": settled + sum(outcomes.values()),
        }
    heldout = counts[Split.HELDOUT]["settled"]
    return {
        **counts,
        "sources": list(policy.sources),
        "min_heldout_pairs": min_heldout_pairs,
        "gate_can_decide": heldout >= min_heldout_pairs,
    }


def evidence_table(columns: list[tuple[str, dict]]) -> dict:
    """round_evidence results side by side (e.g. a round's "at start" and "at export"), as a section per split
    of rows (label, [count per column]) for the start form and the round page; a missing count shows as "–"."""

    def counts(split: str, *path: str) -> list[int | str]:
        cells = []
        for _, evidence in columns:
            value = evidence.get(split, {})
            for key in path:
                value = value.get(key, {}) if isinstance(value, dict) else {}
            cells.append(value if isinstance(value, int) else "–")
        return cells

    sections = []
    for split, name in ((Split.TRAIN, "Training"), (Split.HELDOUT, "Held-out")):
        rows = [("settled preferences (the rows the round uses)", counts(split, "settled"))]
        rows += [(f"settled on {s} votes alone", counts(split, "by_source", s)) for s in JudgmentSource.values]
        rows += [(f"dropped: {label}", counts(split, "dropped", key)) for key, label in OUTCOMES.items() if key != "kept"]
        rows.append(("comparisons in all", counts(split, "comparisons")))
        sections.append({"name": name, "rows": rows})
    return {
        "columns": [label for label, _ in columns],
        "sections": sections,
        "sources": [", ".join(e.get("sources", [])) or "–" for _, e in columns],
        "gate": [
            "–" if not e else f"{'yes' if e['gate_can_decide'] else 'no'} (needs {e['min_heldout_pairs']} held-out)"
            for _, e in columns
        ],
    }


def ab_games(*, campaign: Campaign, sources: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(policy of side a, policy of side b, choice) for every judgment of `sources` on an A/B pair of the
    campaign (its two completions from different policies), retired pairs left out."""
    return list(
        Judgment.objects.filter(comparison__prompt__campaign=campaign, source__in=sources)
        .exclude(comparison__status=ComparisonStatus.RETIRED)
        .exclude(comparison__completion_a__model_version=F("comparison__completion_b__model_version"))
        .order_by("pk")
        .values_list(
            "comparison__completion_a__model_version_id", "comparison__completion_b__model_version_id", "choice"
        )
    )


def campaign_versions(*, campaign: Campaign) -> list[ModelVersion]:
    """Every policy that sampled for the campaign or came out of one of its rounds, oldest first."""
    return list(
        ModelVersion.objects.filter(
            Q(completions__prompt__campaign=campaign) | Q(produced_by__campaign=campaign)
        )
        .distinct()
        .order_by("created_at", "pk")
    )


def round_metrics(*, training_round: TrainingRound) -> QuerySet[RoundMetric]:
    return RoundMetric.objects.filter(round=training_round).order_by("step")


def loop_report_dir(*, campaign: Campaign) -> Path:
    """Where `run_loop` (the simulation harness) keeps a campaign's latest loop report; the rounds page shows it."""
    return Path(settings.ARTIFACTS_DIR) / "loop" / f"campaign-{campaign.pk}"


def loop_report_read(*, campaign: Campaign) -> dict | None:
    path = loop_report_dir(campaign=campaign) / "loop.json"
    return json.loads(path.read_text()) if path.exists() else None

"""Preference export: judgments aggregated per comparison into rows in TRL's preference format.

The aggregation runs in SQL (one grouped query, streamed with .iterator()), and
rows are written as they arrive: memory stays constant whatever the campaign's
size. Files carry no timestamps and rows come in comparison-id order, so the
same judgments always give the same bytes and the same sha256.

Each row's `posterior` is the probability that its chosen completion is truly
the better one, from the campaign's Dawid-Skene fit (labeling.reliability) over
the judgments of the policy's sources; with the policy's winner "posterior", the
chosen completion is the one that fit favours, whatever the votes say. That fit holds the campaign's judgments in
memory (a few numbers per judgment, not their texts), fitted once per export.
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.db.models import (
    Avg,
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Greatest
from django.utils import timezone

from generation.selectors import prompt_model_input
from labeling.models import Campaign, Choice, Comparison, Judgment, JudgmentSource, Split
from labeling.quality import campaign_reliability
from labeling.reliability import ReliabilityResult
from training.config import AggregationPolicy

FORMATS = ("jsonl", "parquet")
# "chat": every prompt as the message list the generator conditioned on (a plain prompt is one user
# turn), so training sees the context the policy is served with. "auto": TRL's standard format,
# plain strings for plain prompts, unless the snapshot holds a chat prompt (one schema per file).
PROMPT_FORMATS = ("chat", "auto")
SPLITS = (Split.TRAIN.value, Split.HELDOUT.value)
_CHUNK = 1000  # rows per database fetch and per Parquet row group


def _heldout_q() -> Q:
    return Q(prompt__split=Split.HELDOUT) | Q(completion_a__is_heldout=True) | Q(completion_b__is_heldout=True)


def _still_undoable(*, sources: tuple[str, ...], as_of: datetime) -> Exists:
    """Whether the comparison has a counted judgment whose answer may still change: one its annotator
    reopened (undo), or a human answer (or revision) given within LABELING_UNDO_WINDOW_S, which its
    annotator may still undo, at `as_of`. Scripted annotators' answers are final when stored (they undo only by
    reopening, caught by the first case); imported ones cannot be undone."""
    cutoff = as_of - timedelta(seconds=settings.LABELING_UNDO_WINDOW_S)
    in_window = Q(created_at__gt=cutoff) | Q(revisions__revised_at__gt=cutoff)
    return Exists(
        Judgment.objects.filter(comparison=OuterRef("pk"), source__in=sources).filter(
            Q(reopened_until__gt=as_of) | (Q(source=JudgmentSource.HUMAN) & in_window)
        )
    )



# Why a comparison of the split gives no row, in the order they are decided; "kept" gives one.
OUTCOMES = {
    "kept": "kept",
    "not_judged": "no counted vote yet",
    "unsettled": "unsettled (fewer votes than the campaign's N)",
    "too_few_votes": "fewer counted votes than min_judgments",
    "tie_or_both_bad": "judged a tie or both bad",
    "no_majority": "votes split evenly between a and b",
    "below_agreement": "winner below the minimum agreement",
}


def _comparisons_voted(
    *, campaign: Campaign, split: str, policy: AggregationPolicy, as_of: datetime | None = None
) -> QuerySet[Comparison]:
    """Every comparison of the split, annotated with its votes, its `chosen_side` ("a", "b" or "") and its
    `outcome` (a key of OUTCOMES), settled or not as of `as_of` (default: now). Queries that must agree (a
    round's two exports and its evidence) pass the same instant: an answer's undo window may close between them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    qs = Comparison.objects.filter(prompt__campaign=campaign)
    if not policy.include_gold:
        qs = qs.filter(is_gold=False)
    # A pair touching a held-out prompt or completion never reaches training.
    qs = qs.filter(_heldout_q()) if split == Split.HELDOUT else qs.exclude(_heldout_q())

    counted = Q(judgments__source__in=policy.sources)

    def votes(choice: str) -> Count:
        return Count("judgments", filter=counted & Q(judgments__choice=choice))

    qs = qs.annotate(
        n_a=votes(Choice.A),
        n_b=votes(Choice.B),
        n_tie=votes(Choice.TIE),
        n_bad=votes(Choice.BOTH_BAD),
        n_imported=Count("judgments", filter=counted & Q(judgments__source=JudgmentSource.IMPORTED)),
        strength_a=Avg("judgments__strength", filter=counted & Q(judgments__choice=Choice.A)),
        strength_b=Avg("judgments__strength", filter=counted & Q(judgments__choice=Choice.B)),
        last_judged_at=Max("judgments__created_at", filter=counted),
    ).annotate(n_judged=F("n_a") + F("n_b") + F("n_tie") + F("n_bad"))
    tie_votes = F("n_tie") if policy.drop_ties else Value(0)
    bad_votes = F("n_bad") if policy.drop_both_bad else Value(0)
    qs = qs.annotate(
        n_counted=F("n_a") + F("n_b") + tie_votes + bad_votes,
        n_rivals=Greatest(tie_votes, bad_votes),
    ).annotate(n_needed=ExpressionWrapper(F("n_counted") * Value(policy.min_agreement), output_field=FloatField()))

    def wins(side: str, other: str) -> Q:
        return (
            Q(**{f"n_{side}__gt": F(f"n_{other}")})
            & Q(**{f"n_{side}__gt": F("n_rivals")})
            & Q(**{f"n_{side}__gte": F("n_needed")})
            & Q(n_counted__gte=policy.min_judgments)
        )

    qs = qs.annotate(
        chosen_side=Case(
            When(wins("a", "b"), then=Value("a")), When(wins("b", "a"), then=Value("b")), default=Value("")
        )
    )
    settling = []
    if policy.settled_only:
        # Settled: all N votes are in (or a data set's label was imported) and none can still be undone.
        qs = qs.annotate(undoable=_still_undoable(sources=policy.sources, as_of=as_of or timezone.now()))
        unsettled = (~Q(n_judged__gte=campaign.annotations_per_pair) & ~Q(n_imported__gt=0)) | Q(undoable=True)
        settling = [When(unsettled, then=Value("unsettled"))]
    return qs.annotate(
        outcome=Case(
            When(n_judged=0, then=Value("not_judged")),
            *settling,
            When(chosen_side__in=["a", "b"], then=Value("kept")),
            When(n_counted__lt=policy.min_judgments, then=Value("too_few_votes")),
            When(Q(n_rivals__gt=0) & Q(n_rivals__gte=Greatest("n_a", "n_b")), then=Value("tie_or_both_bad")),
            When(n_a=F("n_b"), then=Value("no_majority")),
            default=Value("below_agreement"),
        )
    )


def preferences_queryset(
    *, campaign: Campaign, split: str, policy: AggregationPolicy, as_of: datetime | None = None
) -> QuerySet[Comparison]:
    """The comparisons that aggregate to a preference row, annotated with their votes, in export order."""
    voted = _comparisons_voted(campaign=campaign, split=split, policy=policy, as_of=as_of)
    return voted.filter(outcome="kept").order_by("id")


def preferences_outcomes(
    *, campaign: Campaign, split: str, policy: AggregationPolicy, as_of: datetime | None = None
) -> dict[str, int]:
    """How many of the split's comparisons each OUTCOME has under `policy` (every key, zeros included)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    # Counted here, not in SQL: the outcome is computed from aggregates, and SQL cannot group by those.
    voted = _comparisons_voted(campaign=campaign, split=split, policy=policy, as_of=as_of)
    for outcome in voted.values_list("outcome", flat=True):
        counts[outcome] += 1
    return counts


def preferences_count(
    *,
    campaign: Campaign,
    split: str,
    policy: AggregationPolicy,
    judged_after: Any = None,
    as_of: datetime | None = None,
) -> int:
    """How many rows an export would have now (or `as_of`); with `judged_after`, only pairs judged since then."""
    qs = preferences_queryset(campaign=campaign, split=split, policy=policy, as_of=as_of)
    if judged_after is not None:
        qs = qs.filter(last_judged_at__gt=judged_after)
    return qs.count()


def _messages(value: list[dict]) -> list[dict[str, str]]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


def _row(comparison: Comparison, *, conversational: bool, reliability: ReliabilityResult, winner: str) -> dict[str, Any]:
    side = comparison.chosen_side
    if winner == "posterior":
        side = reliability.likelier_side(comparison.pk, default=side)
    a_wins = side == "a"
    chosen, rejected = (
        (comparison.completion_a, comparison.completion_b)
        if a_wins
        else (comparison.completion_b, comparison.completion_a)
    )
    prompt = comparison.prompt
    counted = comparison.n_counted
    winner_votes = comparison.n_a if a_wins else comparison.n_b
    strength = comparison.strength_a if a_wins else comparison.strength_b
    posterior = reliability.winner_posterior(comparison.pk, side)
    margin = comparison.policy_margin
    if conversational:
        prompt_value: Any = _messages(prompt_model_input(prompt))
        chosen_value: Any = [{"role": "assistant", "content": chosen.text}]
        rejected_value: Any = [{"role": "assistant", "content": rejected.text}]
    else:
        prompt_value, chosen_value, rejected_value = prompt.text, chosen.text, rejected.text
    return {
        "prompt": prompt_value,
        "chosen": chosen_value,
        "rejected": rejected_value,
        "comparison_id": comparison.pk,
        "prompt_id": prompt.pk,
        "chosen_completion_id": chosen.pk,
        "rejected_completion_id": rejected.pk,
        "chosen_model_version": chosen.model_version.name,
        "rejected_model_version": rejected.model_version.name,
        "judgment_count": comparison.n_a + comparison.n_b + comparison.n_tie + comparison.n_bad,
        "votes_a": comparison.n_a,
        "votes_b": comparison.n_b,
        "votes_tie": comparison.n_tie,
        "votes_both_bad": comparison.n_bad,
        "agreement": round(winner_votes / counted, 6),
        "strength": None if strength is None else round(float(strength), 6),
        "posterior": None if posterior is None else round(posterior, 6),
        # Active selection (labeling.selection): why the pair was labeled, and the policy's margin for chosen
        # over rejected and its entropy at the prompt when it was scored.
        "selected_by": comparison.selected_by,
        "policy_margin": None if margin is None else round(margin if a_wins else -margin, 6),
        "policy_entropy": None if comparison.policy_entropy is None else round(comparison.policy_entropy, 6),
    }


_TEXT_OR_MESSAGES = {
    False: pa.string(),
    True: pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
}


def _schema(conversational: bool) -> pa.Schema:
    text = _TEXT_OR_MESSAGES[conversational]
    return pa.schema(
        [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("comparison_id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("chosen_completion_id", pa.int64()),
            ("rejected_completion_id", pa.int64()),
            ("chosen_model_version", pa.string()),
            ("rejected_model_version", pa.string()),
            ("judgment_count", pa.int32()),
            ("votes_a", pa.int32()),
            ("votes_b", pa.int32()),
            ("votes_tie", pa.int32()),
            ("votes_both_bad", pa.int32()),
            ("agreement", pa.float64()),
            ("strength", pa.float64()),
            ("posterior", pa.float64()),
            ("selected_by", pa.string()),
            ("policy_margin", pa.float64()),
            ("policy_entropy", pa.float64()),
        ]
    )


def is_conversational(
    *, campaign: Campaign, split: str, policy: AggregationPolicy, prompt_format: str, as_of: datetime | None = None
) -> bool:
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}")
    if prompt_format == "chat":
        return True
    qs = preferences_queryset(campaign=campaign, split=split, policy=policy, as_of=as_of)
    return qs.filter(prompt__messages__isnull=False).exists()


def preference_rows(
    *, campaign: Campaign, split: str, policy: AggregationPolicy, conversational: bool, as_of: datetime | None = None
) -> Iterator[dict[str, Any]]:
    qs = preferences_queryset(campaign=campaign, split=split, policy=policy, as_of=as_of).select_related(
        "prompt", "completion_a__model_version", "completion_b__model_version"
    )
    reliability = campaign_reliability(campaign=campaign, sources=policy.sources)
    for comparison in qs.iterator(chunk_size=_CHUNK):
        yield _row(comparison, conversational=conversational, reliability=reliability, winner=policy.winner)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    row_count: int
    sha256: str
    conversational: bool


def _jsonl_line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _write(
    rows: Iterator[dict[str, Any]],
    *,
    fmt: str,
    out: IO[bytes],
    conversational: bool,
    on_row: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Stream rows into `out`; returns (row count, sha256 of the canonical JSONL bytes).

    The digest is always over the JSONL serialization, so a Parquet snapshot and a
    JSONL snapshot of the same data carry the same sha256 (for a .jsonl file it is
    the file's own sha256).
    """
    digest = hashlib.sha256()
    count = 0
    writer = pq.ParquetWriter(out, _schema(conversational)) if fmt == "parquet" else None
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if writer is not None and batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=writer.schema), row_group_size=_CHUNK)
        batch.clear()

    for row in rows:
        line = _jsonl_line(row)
        digest.update(line)
        if writer is None:
            out.write(line)
        else:
            batch.append(row)
            if len(batch) >= _CHUNK:
                flush()
        count += 1
        if on_row is not None:
            on_row()
    flush()
    if writer is not None:
        writer.close()
    return count, digest.hexdigest()


def export_to_file(
    *,
    campaign: Campaign,
    split: str,
    policy: AggregationPolicy,
    fmt: str,
    path: Path,
    prompt_format: str = "chat",
    on_row: Callable[[], None] | None = None,
    as_of: datetime | None = None,
) -> ExportResult:
    """Write the export to `path` atomically (a temporary sibling renamed into place), settled as of `as_of`
    (default: when it starts)."""
    as_of = as_of or timezone.now()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conversational = is_conversational(
        campaign=campaign, split=split, policy=policy, prompt_format=prompt_format, as_of=as_of
    )
    rows = preference_rows(campaign=campaign, split=split, policy=policy, conversational=conversational, as_of=as_of)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            count, sha = _write(rows, fmt=fmt, out=out, conversational=conversational, on_row=on_row)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ExportResult(path=path, row_count=count, sha256=sha, conversational=conversational)

"""Annotation quality for a campaign: progress, throughput, agreement, position bias, gold accuracy.

Everything is computed from one pass over the campaign's judgments, so the
dashboard, the staff API and the plot agree with each other.
"""

import io
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from labeling import selectors
from labeling.reliability import AnnotatorReliability, Observation, ReliabilityResult, dawid_skene
from labeling.models import (
    Assignment,
    AssignmentState,
    Campaign,
    Choice,
    ComparisonStatus,
    Flag,
    Judgment,
    JudgmentSource,
)


def krippendorff_alpha_nominal(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal values; each unit is the list of values it was given.

    Units with fewer than two values are not pairable and are ignored. None when
    alpha is undefined (no pairable values, or every value identical).
    Built from the coincidence matrix (Krippendorff 2011, "Computing
    Krippendorff's Alpha-Reliability"): alpha = 1 - (n-1) * D_o / sum_{c!=k} n_c n_k.
    """
    coincidences: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_k - 1) if c == k else n_c * n_k
                if pairs:
                    coincidences[(c, k)] += pairs / (m - 1)
    totals: Counter = Counter()
    for (c, _), value in coincidences.items():
        totals[c] += value
    n = sum(totals.values())
    expected = n * n - sum(v * v for v in totals.values())
    if n <= 1 or expected == 0:
        return None
    observed = sum(value for (c, k), value in coincidences.items() if c != k)
    return 1.0 - (n - 1) * observed / expected


def pairwise_agreement(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Share of annotator pairs, over all pairs judged by two or more, that gave the same answer."""
    agreeing = total = 0
    for values in units:
        m = len(values)
        if m < 2:
            continue
        total += m * (m - 1) // 2
        agreeing += sum(c * (c - 1) // 2 for c in Counter(values).values())
    return agreeing / total if total else None


def _picked_left(choice: str, left_is_a: bool) -> bool | None:
    """True for a left pick, False for a right pick, None for tie / both bad."""
    if choice == Choice.A:
        return left_is_a
    if choice == Choice.B:
        return not left_is_a
    return None


@dataclass(frozen=True)
class _Row:
    annotator: str
    comparison_id: int
    choice: str
    left_is_a: bool
    time_ms: int | None
    created_at: datetime
    is_gold: bool
    gold_choice: str


@dataclass
class Tally:
    """Counts over a set of judgments (one annotator's, one time bucket's, or all)."""

    judgments: int = 0
    left: int = 0
    right: int = 0
    ties: int = 0
    both_bad: int = 0
    gold_seen: int = 0
    gold_correct: int = 0
    times: list[int] = field(default_factory=list)

    def add(self, row: _Row) -> None:
        self.judgments += 1
        side = _picked_left(row.choice, row.left_is_a)
        if side is True:
            self.left += 1
        elif side is False:
            self.right += 1
        self.ties += row.choice == Choice.TIE
        self.both_bad += row.choice == Choice.BOTH_BAD
        if row.is_gold:
            self.gold_seen += 1
            self.gold_correct += row.choice == row.gold_choice
        if row.time_ms is not None:
            self.times.append(row.time_ms)

    @property
    def left_share(self) -> float | None:
        sided = self.left + self.right
        return self.left / sided if sided else None

    @property
    def left_p_value(self) -> float | None:
        """Two-sided binomial test of left picks against 1/2, over left and right picks."""
        from scipy.stats import binomtest  # ~1 s to import: only the staff pages pay for it

        sided = self.left + self.right
        return binomtest(self.left, sided, 0.5).pvalue if sided else None

    @property
    def tie_rate(self) -> float | None:
        return self.ties / self.judgments if self.judgments else None

    @property
    def both_bad_rate(self) -> float | None:
        return self.both_bad / self.judgments if self.judgments else None

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None

    @property
    def median_time_ms(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def median_time_s(self) -> float | None:
        return self.median_time_ms / 1000 if self.times else None

    @property
    def p90_time_s(self) -> float | None:
        """90th percentile of time on task (nearest rank), in seconds."""
        if not self.times:
            return None
        ordered = sorted(self.times)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)] / 1000

    @property
    def left_share_interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the left share."""
        return _wilson(self.left, self.left + self.right)

    @property
    def gold_accuracy_interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of gold accuracy."""
        return _wilson(self.gold_correct, self.gold_seen)


def _wilson(successes: int, trials: int) -> tuple[float, float] | None:
    if not trials:
        return None
    from scipy.stats import binomtest

    interval = binomtest(successes, trials, 0.5).proportion_ci(confidence_level=0.95, method="wilson")
    return interval.low, interval.high


@dataclass
class Bucket:
    start: datetime
    tally: Tally


@dataclass
class CampaignReport:
    campaign: Campaign
    comparisons: int
    open: int
    complete: int
    gold: int
    done: int
    needed: int
    judgments_last_hour: int
    judgments_last_day: int
    overall: Tally
    annotators: dict[str, Tally]
    agreement_pairs: int
    pairwise_agreement: float | None
    krippendorff_alpha: float | None
    bucket: timedelta
    series: list[Bucket]
    sources: tuple[str, ...]  # the judgment sources these figures are over
    by_source: dict[str, int]  # every stored judgment of the campaign, by source (those left out shown apart)
    skips: dict[str, int] = field(default_factory=dict)  # per annotator: pairs given back without a flag
    flags: dict[str, int] = field(default_factory=dict)  # per annotator: pairs flagged
    reliability: ReliabilityResult | None = None  # the Dawid-Skene fit over the same judgments

    def annotator_reliability(self, name: str) -> AnnotatorReliability | None:
        return self.reliability.annotators.get(name) if self.reliability else None

    def reliability_stands_out(self, name: str) -> tuple[bool, bool]:
        """Whether their reliability's, and their decisive accuracy's, 95% interval lies wholly below the median
        annotator's figure: worth a look. Either can show a bad annotator alone: where most pairs are ties, one
        who flips decisive answers is right on most pairs, and only their decisive accuracy falls."""
        mine = self.annotator_reliability(name)
        medians = self._reliability_medians
        if mine is None or medians is None:
            return False, False
        median_reliability, median_decisive = medians
        low_decisive = mine.decisive is not None and median_decisive is not None and mine.decisive_high < median_decisive
        return mine.high < median_reliability, low_decisive

    @cached_property
    def _reliability_medians(self) -> tuple[float, float | None] | None:
        """The median annotator's reliability and decisive accuracy (None with fewer than 3 estimates)."""
        estimates = self.reliability.annotators.values() if self.reliability else []
        if len(estimates) < 3:
            return None
        decisive = [r.decisive for r in estimates if r.decisive is not None]
        return (
            statistics.median(r.reliability for r in estimates),
            statistics.median(decisive) if len(decisive) >= 3 else None,
        )

    @property
    def fraction(self) -> float:
        return self.done / self.needed if self.needed else 1.0

    @property
    def annotator_lines(self) -> list[tuple[str, Tally, int, int, AnnotatorReliability | None, bool, bool]]:
        """(name, tally, skips, flags, reliability, its stands out, decisive accuracy's) per annotator, for the
        dashboard's table."""
        return [
            (
                name,
                t,
                self.skips.get(name, 0),
                self.flags.get(name, 0),
                self.annotator_reliability(name),
                *self.reliability_stands_out(name),
            )
            for name, t in self.annotators.items()
        ]


def _rows(campaign: Campaign, sources: Sequence[str]) -> list[_Row]:
    fields = (
        "annotator__username",
        "comparison_id",
        "choice",
        "left_is_a",
        "time_ms",
        "created_at",
        "comparison__is_gold",
        "comparison__gold_choice",
    )
    judgments = Judgment.objects.filter(comparison__prompt__campaign=campaign, source__in=sources).order_by(
        "created_at", "id"
    )
    return [_Row(*values) for values in judgments.values_list(*fields).iterator(chunk_size=5000)]


def _series(rows: list[_Row]) -> tuple[timedelta, list[Bucket]]:
    """Rows grouped by hour (spans up to two days) or by day."""
    if not rows:
        return timedelta(hours=1), []
    span = rows[-1].created_at - rows[0].created_at
    step = timedelta(hours=1) if span <= timedelta(days=2) else timedelta(days=1)
    origin = rows[0].created_at.replace(minute=0, second=0, microsecond=0)
    if step == timedelta(days=1):
        origin = origin.replace(hour=0)
    buckets: dict[int, Tally] = defaultdict(Tally)
    for row in rows:
        buckets[int((row.created_at - origin) / step)].add(row)
    return step, [Bucket(start=origin + i * step, tally=buckets[i]) for i in range(max(buckets) + 1)]


def campaign_report(*, campaign: Campaign, sources: Sequence[str] = (JudgmentSource.HUMAN,)) -> CampaignReport:
    """The campaign's quality figures over judgments from `sources` (human ones unless a caller asks)."""
    rows = _rows(campaign, sources)
    overall = Tally()
    annotators: dict[str, Tally] = defaultdict(Tally)
    by_pair: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        overall.add(row)
        annotators[row.annotator].add(row)
        by_pair[row.comparison_id].append(row.choice)
    units = [choices for choices in by_pair.values() if len(choices) >= 2]
    counts = selectors.comparisons_of_work(campaign=campaign).aggregate(
        comparisons=Count("pk"),
        open=Count("pk", filter=Q(status=ComparisonStatus.OPEN)),
        complete=Count("pk", filter=Q(status=ComparisonStatus.COMPLETE)),
        gold=Count("pk", filter=Q(is_gold=True)),
    )
    done, needed = selectors.campaign_progress(campaign=campaign)
    skips, flags = _skips_and_flags(campaign)
    for name in {*skips, *flags}:
        annotators.setdefault(name, Tally())  # an annotator who only skipped or flagged still has a line
    now = timezone.now()
    bucket, series = _series(rows)
    return CampaignReport(
        campaign=campaign,
        **counts,
        done=done,
        needed=needed,
        judgments_last_hour=sum(1 for r in rows if r.created_at > now - timedelta(hours=1)),
        judgments_last_day=sum(1 for r in rows if r.created_at > now - timedelta(days=1)),
        overall=overall,
        annotators=dict(sorted(annotators.items())),
        agreement_pairs=len(units),
        pairwise_agreement=pairwise_agreement(units),
        krippendorff_alpha=krippendorff_alpha_nominal(units),
        bucket=bucket,
        series=series,
        sources=tuple(sources),
        by_source=dict(
            Judgment.objects.filter(comparison__prompt__campaign=campaign)
            .values_list("source")
            .annotate(n=Count("pk"))
            .order_by("source")
        ),
        skips=skips,
        flags=flags,
        reliability=_reliability(rows),
    )


@dataclass
class QualitySeries:
    """What the dashboard's plot draws: the campaign's figures over time, without the rest of the report."""

    campaign: Campaign
    bucket: timedelta
    series: list[Bucket]


def campaign_series(*, campaign: Campaign, sources: Sequence[str] = (JudgmentSource.HUMAN,)) -> QualitySeries:
    """The campaign's quality figures over time (campaign_report's series) without the reliability fit, which
    costs as much as reading the judgments (bench/quality_report.py) and which the plot does not draw."""
    bucket, series = _series(_rows(campaign, sources))
    return QualitySeries(campaign=campaign, bucket=bucket, series=series)


def _fit_input(rows: Sequence[_Row]) -> tuple[list[Observation], dict[int, str]]:
    observations = [Observation(r.annotator, r.comparison_id, r.choice, r.left_is_a) for r in rows]
    gold = {r.comparison_id: r.gold_choice for r in rows if r.is_gold and r.gold_choice}
    return observations, gold


def _reliability(rows: Sequence[_Row]) -> ReliabilityResult:
    observations, gold = _fit_input(rows)
    return dawid_skene(observations, gold=gold)


def reliability_input(
    *, campaign: Campaign, sources: Sequence[str] = (JudgmentSource.HUMAN,)
) -> tuple[list[Observation], dict[int, str]]:
    """What campaign_reliability fits: the judgments from `sources` as observations, and the gold answers of
    the judged gold comparisons (for a caller that fits them itself, as bench/quality_report.py times the fit)."""
    return _fit_input(_rows(campaign, sources))


def campaign_reliability(*, campaign: Campaign, sources: Sequence[str] = (JudgmentSource.HUMAN,)) -> ReliabilityResult:
    """The Dawid-Skene fit over the campaign's judgments from `sources`: per annotator and per comparison."""
    return _reliability(_rows(campaign, sources))


def answer_posteriors(judgments: Sequence[Judgment]) -> dict[int, float | None]:
    """Per judgment (by pk), how probable its answer is its pair's truth under the reliability fit of its
    campaign's judgments from its own source: a human's against the humans (as on the dashboard), a scripted
    annotator's against the simulated crowd, never mixed. One fit per campaign and source among them."""
    keys = {(j.comparison.prompt.campaign_id, j.source) for j in judgments}
    campaigns = Campaign.objects.in_bulk({campaign for campaign, _ in keys})
    fits = {(pk, source): campaign_reliability(campaign=campaigns[pk], sources=(source,)) for pk, source in keys}
    return {
        j.pk: fits[j.comparison.prompt.campaign_id, j.source].answer_posterior(j.comparison_id, j.choice)
        for j in judgments
    }


def _skips_and_flags(campaign: Campaign) -> tuple[dict[str, int], dict[str, int]]:
    """Per annotator: skipped assignments that carry no flag (a flag also gives the pair back), and flags."""
    flagged = Flag.objects.filter(comparison=OuterRef("comparison"), annotator=OuterRef("annotator"))
    skips = (
        Assignment.objects.filter(comparison__prompt__campaign=campaign, state=AssignmentState.SKIPPED)
        .exclude(Exists(flagged))
        .values_list("annotator__username")
        .annotate(n=Count("pk"))
    )
    flags = Flag.objects.filter(comparison__prompt__campaign=campaign).values_list("annotator__username").annotate(n=Count("pk"))
    return dict(skips), dict(flags)


def report_plot_png(report: CampaignReport | QualitySeries) -> bytes:
    """Throughput, gold accuracy, left share and tie / both-bad rates over time, as one PNG."""
    from matplotlib.figure import Figure  # imported here for the same reason as scipy above

    # Figure + its own Agg canvas, not pyplot: no global state shared between request threads.
    figure = Figure(figsize=(9, 7.5), layout="constrained")
    axes = figure.subplots(4, 1, sharex=True)
    starts = [b.start for b in report.series]
    tallies = [b.tally for b in report.series]
    unit = "hour" if report.bucket == timedelta(hours=1) else "day"

    def line(ax, values, label, **style) -> None:
        ax.plot(starts, [float("nan") if v is None else v for v in values], label=label, **{"marker": "o", "ms": 3, **style})

    axes[0].bar(starts, [t.judgments for t in tallies], width=report.bucket * 0.8, align="edge")
    axes[0].set_ylabel(f"judgments / {unit}")
    line(axes[1], [t.gold_accuracy for t in tallies], "gold accuracy")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_ylabel("gold accuracy")
    line(axes[2], [t.left_share for t in tallies], "left picks")
    axes[2].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_ylabel("left share")
    # Different markers and dashes, the second drawn thinner on top: two series that coincide both stay visible.
    line(axes[3], [t.tie_rate for t in tallies], "tie", lw=3, alpha=0.6)
    line(axes[3], [t.both_bad_rate for t in tallies], "both bad", ls="--", marker="x", ms=6, lw=1.2)
    axes[3].set_ylim(0, 1.05)
    axes[3].set_ylabel("rate")
    axes[3].legend(loc="upper right")
    for ax in axes:
        ax.grid(alpha=0.3)
    if not starts:
        axes[0].text(0.5, 0.5, "no judgments yet", transform=axes[0].transAxes, ha="center")
    figure.suptitle(f"{report.campaign.name}: quality over time (per {unit})")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()

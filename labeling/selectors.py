"""Reads shared by the labeling services, views and API."""

from dataclasses import dataclass
from datetime import datetime, time

from django.contrib.auth.models import User
from django.db.models import Count, Exists, Max, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from labeling import queue
from labeling.models import (
    Assignment,
    AssignmentState,
    Campaign,
    Comparison,
    ComparisonStatus,
    Flag,
    Judgment,
    Split,
    JudgmentSource,
)

SIDES = ("left", "right")


def comparisons_of_work(*, campaign: Campaign) -> QuerySet[Comparison]:
    """The campaign's pairs that are annotators' work: all but imported regular pairs (a data set's
    label settles those on arrival; they are never queued), so they stay out of progress and counts.
    Imported gold pairs are served to annotators like any gold pair, and stay in."""
    imported = Exists(Judgment.objects.filter(comparison=OuterRef("pk"), source=JudgmentSource.IMPORTED))
    return (
        Comparison.objects.filter(prompt__campaign=campaign).alias(imported=imported).exclude(is_gold=False, imported=True)
    )


def campaigns_for_labeling() -> QuerySet[Campaign]:
    return Campaign.objects.filter(is_active=True)


def campaigns_open_to(*, user: User) -> QuerySet[Campaign]:
    """Active campaigns the user may label: open to everyone, or listing the user or one of
    their groups as members. Staff may label any."""
    campaigns = campaigns_for_labeling()
    if user.is_staff:
        return campaigns
    return campaigns.filter(Q(open_to_everyone=True) | Q(members=user) | Q(member_groups__user=user)).distinct()


def campaign_open_to(*, campaign: Campaign, user: User) -> bool:
    """campaigns_open_to's rule for one loaded campaign (no query for a campaign open to everyone)."""
    if campaign.open_to_everyone or user.is_staff:
        return True
    return campaigns_open_to(user=user).filter(pk=campaign.pk).exists()


def campaigns_listed(*, user: User) -> QuerySet[Campaign]:
    """The campaigns on the user's home page: annotators see only those with pairs to judge; staff see all."""
    campaigns = campaigns_open_to(user=user).annotate(
        has_pairs=Exists(Comparison.objects.filter(prompt__campaign=OuterRef("pk"), prompt__enabled=True, is_gold=False))
    )
    return campaigns if user.is_staff else campaigns.filter(has_pairs=True)


def campaign_allowed_choices(*, campaign: Campaign) -> list[str]:
    """The choices an annotator may send, in terms of the sides shown."""
    choices = [*SIDES]
    if campaign.allow_tie:
        choices.append("tie")
    if campaign.allow_both_bad:
        choices.append("both_bad")
    return choices


# /me/ counts the pairs still open to an annotator up to this many (the page shows "N+" beyond):
# an exact count walks the whole campaign, and the labeling page asks after every judgment.
PAIRS_LEFT_COUNTED = 1000


@dataclass(frozen=True)
class Progress:
    mine_today: int
    mine_total: int
    daily_goal: int
    campaign_done: int
    campaign_needed: int
    campaign_state: str  # "no_pairs" before generation, "done" once every regular pair has its N judgments, else "open"
    campaign_more: bool = False  # more pairs are open to the annotator than campaign_needed counts

    @property
    def campaign_fraction(self) -> float:
        return self.campaign_done / self.campaign_needed if self.campaign_needed else 0.0


    @property
    def today_fraction(self) -> float:
        return min(1.0, self.mine_today / self.daily_goal) if self.daily_goal else 1.0


def judgments_mine(*, annotator: User, campaign: Campaign) -> tuple[int, int]:
    """(all, today's) judgments of the annotator in the campaign, in one statement."""
    start = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    row = Judgment.objects.filter(annotator=annotator, comparison__prompt__campaign=campaign).aggregate(
        total=Count("pk"), today=Count("pk", filter=Q(created_at__gte=start))
    )
    return row["total"], row["today"]


def selection_candidates(*, campaign: Campaign) -> QuerySet[Comparison]:
    """Regular training pairs that nobody has judged or picked yet: what active selection chooses among."""
    return (
        Comparison.objects.filter(
            prompt__campaign=campaign,
            prompt__enabled=True,
            prompt__split=Split.TRAIN,
            status=ComparisonStatus.OPEN,
            is_gold=False,
            judgments_count=0,
            selected_by="",
        )
        .select_related("prompt", "completion_a", "completion_b")
        .order_by("id")
    )


def judged_pairs_recent(
    *, campaign: Campaign, sources: tuple[str, ...], limit: int
) -> list[tuple[Comparison, list[str]]]:
    """The campaign's regular pairs most recently judged by `sources`' judgments (at most `limit` pairs), each
    with those judgments' choices: what active selection learns how often answers pick a side from."""
    pairs = list(
        Comparison.objects.filter(prompt__campaign=campaign, is_gold=False, judgments__source__in=sources)
        .annotate(last_judged=Max("judgments__created_at"))
        .select_related("prompt", "completion_a", "completion_b")
        .order_by("-last_judged", "-pk")[:limit]
    )
    choices: dict[int, list[str]] = {pair.pk: [] for pair in pairs}
    for pk, choice in Judgment.objects.filter(comparison__in=pairs, source__in=sources).values_list(
        "comparison_id", "choice"
    ):
        choices[pk].append(choice)
    return [(pair, choices[pair.pk]) for pair in pairs]


def picked_open(*, campaign: Campaign) -> QuerySet[Comparison]:
    """Pairs of the current batch of human work (picked by active selection) that still need judgments."""
    return Comparison.objects.filter(
        prompt__campaign=campaign, status=ComparisonStatus.OPEN, is_gold=False, selection_rank__gt=0
    )


def campaign_progress(*, campaign: Campaign) -> tuple[int, int]:
    """(judgments done, judgments needed) over the campaign's regular, enabled, unretired pairs."""
    n = campaign.annotations_per_pair
    row = comparisons_of_work(campaign=campaign).filter(
        prompt__enabled=True, is_gold=False
    ).exclude(status=ComparisonStatus.RETIRED).aggregate(
        pairs=Count("pk"), done=Coalesce(Sum(Least("judgments_count", Value(n))), 0)
    )
    return row["done"], row["pairs"] * n


def campaign_state(*, campaign: Campaign) -> str:
    """"no_pairs" before generation, "done" once every regular pair has its N judgments, else "open":
    campaign_progress's verdict, read from the queue's index while an open pair needs judgments
    (one row found), and from the whole campaign only when none does."""
    needing = Comparison.objects.filter(
        prompt__campaign=campaign,
        prompt__enabled=True,
        is_gold=False,
        status=ComparisonStatus.OPEN,
        judgments_count__lt=campaign.annotations_per_pair,
    )
    if needing.exists():
        return "open"
    done, needed = campaign_progress(campaign=campaign)
    return "no_pairs" if not needed else "done" if done >= needed else "open"


def pairs_left_for(*, campaign: Campaign, annotator: User, now: datetime, limit: int) -> int:
    """The pairs this annotator holds unexpired leases on in the campaign, plus those the queue may still
    give them, counted up to `limit` (a result of `limit` means "at least").

    Gold pairs count like regular ones, but only where assignment_next serves
    them: when the campaign mixes gold in, and while regular work is left. The
    limit caps the sum, so a capped figure tells nothing of how much of it is gold.
    """
    held = Assignment.objects.filter(
        annotator=annotator, comparison__prompt__campaign=campaign, state=AssignmentState.LEASED, leased_until__gt=now
    ).count()
    left = held + queue.claimable_count(campaign=campaign, annotator=annotator, gold=False, now=now, limit=limit)
    if left > held and left < limit and campaign.gold_rate:
        left += queue.claimable_count(campaign=campaign, annotator=annotator, gold=True, now=now, limit=limit - left)
    return min(left, limit)


def annotator_progress(*, campaign: Campaign, annotator: User, daily_goal: int) -> Progress:
    """The annotator's own progress. The campaign counter is theirs too (their judgments out of those plus
    the pairs still open to them, counted up to PAIRS_LEFT_COUNTED), so a gold pair moves it exactly as a
    regular one does: a campaign-wide count of regular work would stand still after a gold pair and give
    it away. The campaign's state ("no_pairs", "open", "done") comes from its regular pairs; staff see its
    real progress on the dashboard (campaign_progress)."""
    mine, today = judgments_mine(annotator=annotator, campaign=campaign)
    # One past the cap, so exactly PAIRS_LEFT_COUNTED left is not reported as more.
    left = pairs_left_for(campaign=campaign, annotator=annotator, now=timezone.now(), limit=PAIRS_LEFT_COUNTED + 1)
    return Progress(
        mine_today=today,
        mine_total=mine,
        daily_goal=daily_goal,
        campaign_done=mine,
        campaign_needed=mine + min(left, PAIRS_LEFT_COUNTED),
        campaign_state=campaign_state(campaign=campaign),
        campaign_more=left > PAIRS_LEFT_COUNTED,
    )


@dataclass(frozen=True)
class FlagCounts:
    open: int
    total: int


def campaign_flag_counts(*, campaign: Campaign) -> FlagCounts:
    row = Flag.objects.filter(comparison__prompt__campaign=campaign).aggregate(
        open=Count("pk", filter=Q(resolved_at__isnull=True)), total=Count("pk")
    )
    return FlagCounts(open=row["open"], total=row["total"])

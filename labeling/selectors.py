"""Reads shared by the labeling services, views and API."""

from dataclasses import dataclass
from datetime import datetime, time

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from labeling.models import (
    Assignment,
    AssignmentState,
    Campaign,
    Comparison,
    ComparisonStatus,
    Judgment,
    Prompt,
)

SIDES = ("left", "right")


def campaigns_for_labeling() -> QuerySet[Campaign]:
    return Campaign.objects.filter(is_active=True)


def campaign_allowed_choices(*, campaign: Campaign) -> list[str]:
    """The choices an annotator may send, in terms of the sides shown."""
    choices = [*SIDES]
    if campaign.allow_tie:
        choices.append("tie")
    if campaign.allow_both_bad:
        choices.append("both_bad")
    return choices


def _live_leases(*, now: datetime) -> Q:
    return Q(state=AssignmentState.LEASED, leased_until__gt=now)


_DISPLAY = ("prompt__campaign", "completion_a", "completion_b")  # what the comparison page shows


def assignment_live_id(*, annotator: User, campaign: Campaign, now: datetime, other_than: int | None) -> int | None:
    """The annotator's oldest unexpired lease in the campaign, other than `other_than`."""
    return (
        Assignment.objects.filter(_live_leases(now=now), annotator=annotator, comparison__prompt__campaign=campaign)
        .exclude(pk=other_than)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
        .first()
    )


def assignment_for_display(*, pk: int) -> Assignment:
    return Assignment.objects.select_related(*(f"comparison__{path}" for path in _DISPLAY)).get(pk=pk)


def comparison_for_display(*, pk: int) -> Comparison:
    return Comparison.objects.select_related(*_DISPLAY).get(pk=pk)


def comparison_claim_sql(
    *, campaign: Campaign, annotator: User, gold: bool, now: datetime, exclude: list[int], lock: bool
) -> tuple[str, list]:
    """SQL for the first open pair of the campaign this annotator may be given, in serving order.

    A regular pair is claimable while its judgments plus its live leases are
    fewer than the campaign's N. Gold pairs have a known answer and exist to
    measure annotators, so each annotator may get each once: they have no cap.
    With `lock`, the row is locked FOR UPDATE SKIP LOCKED, and the claim
    re-checks the cap afterwards (comparison_has_room), because this
    statement's snapshot may predate a lease committed a moment ago.

    Raw SQL because this runs on every claim: the ORM spent more CPU compiling
    the query (~2.5 ms) than PostgreSQL spends running it (~0.1 ms). For
    regular pairs it walks the comparison_queue index (open, non-gold, by
    priority then age) and stops at the first free row.
    """
    comparison, prompt, assignment = (
        connection.ops.quote_name(m._meta.db_table) for m in (Comparison, Prompt, Assignment)
    )
    leased_until = connection.ops.adapt_datetimefield_value(now)
    sql = [
        f"SELECT c.id FROM {comparison} c JOIN {prompt} p ON p.id = c.prompt_id",
        f"WHERE p.campaign_id = %s AND p.enabled AND c.status = '{ComparisonStatus.OPEN}'",
        f"AND {'c.is_gold' if gold else 'NOT c.is_gold'}",
        f"AND NOT EXISTS (SELECT 1 FROM {assignment} s WHERE s.comparison_id = c.id AND s.annotator_id = %s)",
    ]
    params: list = [campaign.pk, annotator.pk]
    if not gold:
        sql.append(
            f"AND c.judgments_count + (SELECT count(*) FROM {assignment} l WHERE l.comparison_id = c.id"
            f" AND l.state = '{AssignmentState.LEASED}' AND l.leased_until > %s) < %s"
        )
        params += [leased_until, campaign.annotations_per_pair]
    if exclude:
        sql.append(f"AND c.id NOT IN ({', '.join(['%s'] * len(exclude))})")
        params += exclude
    sql.append("ORDER BY c.priority DESC, c.id LIMIT 1")
    if lock and connection.features.has_select_for_update_skip_locked:
        sql.append("FOR UPDATE OF c SKIP LOCKED")
    return "\n".join(sql), params


def comparison_has_room(*, comparison: Comparison, annotator: User, n: int, now: datetime) -> bool:
    """Whether the (locked) comparison can still be leased to this annotator, as of now.

    Run as its own statement after the row lock is held: under READ COMMITTED it
    sees every lease committed before the lock was granted. Raw SQL like the
    claim it completes, and for the same reason.
    """
    assignment = connection.ops.quote_name(Assignment._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT SUM(CASE WHEN state = %s AND leased_until > %s THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN annotator_id = %s THEN 1 ELSE 0 END) FROM {assignment} WHERE comparison_id = %s",
            [AssignmentState.LEASED, connection.ops.adapt_datetimefield_value(now), annotator.pk, comparison.pk],
        )
        live, mine = cursor.fetchone()
    if mine:
        return False
    return comparison.is_gold or comparison.judgments_count + (live or 0) < n


@dataclass(frozen=True)
class Progress:
    mine_today: int
    mine_total: int
    daily_goal: int
    campaign_done: int
    campaign_needed: int

    @property
    def campaign_fraction(self) -> float:
        return self.campaign_done / self.campaign_needed if self.campaign_needed else 1.0

    @property
    def today_fraction(self) -> float:
        return min(1.0, self.mine_today / self.daily_goal) if self.daily_goal else 1.0


def judgments_mine_today(*, annotator: User, campaign: Campaign) -> int:
    start = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    return Judgment.objects.filter(
        annotator=annotator, created_at__gte=start, comparison__prompt__campaign=campaign
    ).count()


def campaign_progress(*, campaign: Campaign) -> tuple[int, int]:
    """(judgments done, judgments needed) over the campaign's regular, enabled, unretired pairs."""
    n = campaign.annotations_per_pair
    row = Comparison.objects.filter(
        prompt__campaign=campaign, prompt__enabled=True, is_gold=False
    ).exclude(status=ComparisonStatus.RETIRED).aggregate(
        pairs=Count("pk"), done=Coalesce(Sum(Least("judgments_count", Value(n))), 0)
    )
    return row["done"], row["pairs"] * n


def annotator_progress(*, campaign: Campaign, annotator: User, daily_goal: int) -> Progress:
    done, needed = campaign_progress(campaign=campaign)
    return Progress(
        mine_today=judgments_mine_today(annotator=annotator, campaign=campaign),
        mine_total=Judgment.objects.filter(annotator=annotator, comparison__prompt__campaign=campaign).count(),
        daily_goal=daily_goal,
        campaign_done=done,
        campaign_needed=needed,
    )

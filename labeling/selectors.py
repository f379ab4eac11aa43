"""Reads shared by the labeling services, views and API."""

import json
from dataclasses import dataclass
from datetime import datetime, time

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from labeling.models import (
    Assignment,
    AssignmentState,
    Campaign,
    Comparison,
    ComparisonStatus,
    Flag,
    Judgment,
    Prompt,
)

SIDES = ("left", "right")


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


# The queue's hot path (next, submit, skip) is hand-written SQL: the ORM spent
# 0.4-2.5 ms of CPU compiling each of these statements, against ~0.1 ms for
# PostgreSQL to run them, and that CPU was most of a request's cost under load.
# Each runs on PostgreSQL and SQLite alike; `tables` names the tables.


def tables(*models) -> tuple[str, ...]:
    return tuple(connection.ops.quote_name(m._meta.db_table) for m in models)


def db_timestamp(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def columns(model, alias: str) -> str:
    """The model's columns, qualified by a table alias, in the order `fetch_one` reads them."""
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


def fetch_one(model, sql: str, params: list) -> tuple[object, tuple] | None:
    """Run a SELECT whose row starts with `columns(model, ...)`: the model instance (values
    converted as the ORM would) and the row's remaining values; None if no row.

    Model.objects.raw() does the same but works out the column mapping on every
    call, which cost ~40% more CPU than the query itself.
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    fields = model._meta.concrete_fields
    values = list(row[: len(fields)])
    for i, field in enumerate(fields):
        expression = field.get_col(model._meta.db_table)
        for convert in connection.ops.get_db_converters(expression) + expression.get_db_converters(connection):
            values[i] = convert(values[i], expression, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], values), row[len(fields) :]


def loaded(model, **values):
    """A model instance for a row that hand-written SQL read or wrote, as the ORM would have loaded it
    (fields not given are deferred: read on first access)."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


def campaign_for_labeling(*, pk: int) -> Campaign | None:
    """The campaign if it is open for labeling (campaigns_for_labeling, by primary key)."""
    (campaign,) = tables(Campaign)
    found = fetch_one(Campaign, f"SELECT {columns(Campaign, 'k')} FROM {campaign} k WHERE k.id = %s AND k.is_active", [pk])
    return found[0] if found else None


def assignment_live(*, annotator: User, campaign: Campaign, now: datetime, other_than: int | None) -> Assignment | None:
    """The annotator's oldest unexpired lease in the campaign, other than `other_than`."""
    assignment, comparison, prompt = tables(Assignment, Comparison, Prompt)
    found = fetch_one(
        Assignment,
        f"SELECT {columns(Assignment, 'a')} FROM {assignment} a JOIN {comparison} c ON c.id = a.comparison_id"
        f" JOIN {prompt} p ON p.id = c.prompt_id"
        " WHERE a.annotator_id = %s AND p.campaign_id = %s AND a.state = %s AND a.leased_until > %s AND a.id <> %s"
        " ORDER BY a.created_at, a.id LIMIT 1",
        [annotator.pk, campaign.pk, AssignmentState.LEASED, db_timestamp(now), other_than or 0],
    )
    return found[0] if found else None


@dataclass(frozen=True)
class PairTexts:
    prompt: str
    messages: list[dict] | None
    a: str
    b: str


def pair_texts(*, assignment_id: int) -> PairTexts:
    """What the comparison page shows of an assignment's pair: the prompt and both completions."""
    from generation.models import Completion

    assignment, comparison, prompt, completion = tables(Assignment, Comparison, Prompt, Completion)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.text, p.messages, ca.text, cb.text FROM {assignment} s"
            f" JOIN {comparison} c ON c.id = s.comparison_id JOIN {prompt} p ON p.id = c.prompt_id"
            f" JOIN {completion} ca ON ca.id = c.completion_a_id JOIN {completion} cb ON cb.id = c.completion_b_id"
            " WHERE s.id = %s",
            [assignment_id],
        )
        text, messages, a, b = cursor.fetchone()
    return PairTexts(prompt=text, messages=json.loads(messages) if messages is not None else None, a=a, b=b)


def comparison_claim_sql(
    *, campaign: Campaign, annotator: User, gold: bool, now: datetime, exclude: list[int], lock: bool
) -> tuple[str, list]:
    """SQL for the first open pair of the campaign this annotator may be given, in serving order.

    A regular pair is claimable while its judgments plus its live leases are
    fewer than the campaign's N. Gold pairs have a known answer and exist to
    measure annotators, so each annotator may get each once: they have no cap.
    With `lock`, the row is locked FOR UPDATE SKIP LOCKED, and the lease's
    insert re-checks the cap (services._lease_if_room), because this
    statement's snapshot may predate a lease committed a moment ago.

    For regular pairs it walks the comparison_queue index (open, non-gold, by
    priority then age) and stops at the first free row.
    """
    comparison, prompt, assignment = tables(Comparison, Prompt, Assignment)
    leased_until = db_timestamp(now)
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


@dataclass(frozen=True)
class Progress:
    mine_today: int
    mine_total: int
    daily_goal: int
    campaign_done: int
    campaign_needed: int

    @property
    def campaign_fraction(self) -> float:
        return self.campaign_done / self.campaign_needed if self.campaign_needed else 0.0

    @property
    def campaign_state(self) -> str:
        """"no_pairs" before generation, "done" once every regular pair has its N judgments, else "open"."""
        if not self.campaign_needed:
            return "no_pairs"
        return "done" if self.campaign_done >= self.campaign_needed else "open"

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


@dataclass(frozen=True)
class FlagCounts:
    open: int
    total: int


def campaign_flag_counts(*, campaign: Campaign) -> FlagCounts:
    row = Flag.objects.filter(comparison__prompt__campaign=campaign).aggregate(
        open=Count("pk", filter=Q(resolved_at__isnull=True)), total=Count("pk")
    )
    return FlagCounts(open=row["open"], total=row["total"])

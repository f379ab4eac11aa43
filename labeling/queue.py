"""The work queue's SQL: every statement of the hot path (next, submit, skip), built and run here.

The queue's hot path is hand-written SQL: the ORM spent 0.4-2.5 ms of CPU
compiling each of these statements, against ~0.1 ms for PostgreSQL to run
them, and that CPU was most of a request's cost under load. Each statement
runs on PostgreSQL and SQLite alike. Each rule of the queue is written once
here (the cap on a pair is `_has_room`); labeling.services owns the
transactions and the domain checks and calls these.
"""

import functools
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from django.contrib.auth.models import Group

from labeling.models import (
    SIMULATED_GROUP,
    Assignment,
    AssignmentState,
    Campaign,
    Comparison,
    ComparisonStatus,
    Flag,
    Judgment,
    JudgmentSource,
    Prompt,
)

def tables(*models) -> tuple[str, ...]:
    return tuple(_quoted_table(m, connection.vendor) for m in models)


# The SQL text of the hot path is the same on every request; these are worked out once per model
# (and database vendor). Building them each time cost ~10% of a request's CPU (connection proxy
# lookups, quote_name, the ORM's converter discovery), more than the statements took to send.


@functools.cache
def _quoted_table(model, vendor: str) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@functools.cache
def _columns(model, alias: str, vendor: str) -> str:
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


@functools.cache
def _converters(model, vendor: str) -> tuple[tuple[int, tuple, object], ...]:
    """(column index, converters, expression) for the model's columns that need converting, as the ORM would."""
    found = []
    for i, field in enumerate(model._meta.concrete_fields):
        expression = field.get_col(model._meta.db_table)
        converters = tuple(connection.ops.get_db_converters(expression) + expression.get_db_converters(connection))
        if converters:
            found.append((i, converters, expression))
    return tuple(found)


def db_timestamp(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def columns(model, alias: str) -> str:
    """The model's columns, qualified by a table alias, in the order `fetch_one` reads them."""
    return _columns(model, alias, connection.vendor)


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
    return _instance(model, row), row[len(model._meta.concrete_fields) :]


def _instance(model, row: tuple):
    """The model instance for a row that starts with `columns(model, ...)`."""
    fields = model._meta.concrete_fields
    values = list(row[: len(fields)])
    for i, converters, expression in _converters(model, connection.vendor):
        for convert in converters:
            values[i] = convert(values[i], expression, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], values)


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
    """The annotator's oldest unexpired lease in the campaign, other than `other_than`, with its pair's texts
    (`pair_texts`)."""
    assignment, comparison, prompt = tables(Assignment, Comparison, Prompt)
    texts, completions = _texts("c", "p")
    found = fetch_one(
        Assignment,
        f"SELECT {columns(Assignment, 'a')}, {texts} FROM {assignment} a JOIN {comparison} c ON c.id = a.comparison_id"
        f" JOIN {prompt} p ON p.id = c.prompt_id {completions}"
        " WHERE a.annotator_id = %s AND p.campaign_id = %s AND a.state = %s AND a.leased_until > %s AND a.id <> %s"
        " ORDER BY a.created_at, a.id LIMIT 1",
        [annotator.pk, campaign.pk, AssignmentState.LEASED, db_timestamp(now), other_than or 0],
    )
    if found is None:
        return None
    held, row = found
    held.pair_texts = PairTexts.from_row(row)
    return held


@dataclass(frozen=True)
class PairTexts:
    """What the comparison page shows of a pair: the prompt and both completions.

    The queue reads them in the statement that finds or claims the pair and hands
    them on as the assignment's `pair_texts` (as an ORM annotation would be), so
    serving a pair costs no round trip of its own."""

    prompt: str
    messages: list[dict] | None
    a: str
    b: str

    @classmethod
    def from_row(cls, row: tuple) -> "PairTexts":
        """From the four values `_texts` selects."""
        text, messages, a, b = row
        return cls(prompt=text, messages=json.loads(messages) if messages is not None else None, a=a, b=b)


def _texts(comparison: str, prompt: str) -> tuple[str, str]:
    """The select list (four values, for PairTexts.from_row) and the joins that read a pair's texts,
    given the aliases of its comparison and its (joined) prompt."""
    # The completion table through the foreign key: labeling does not import generation.
    (completion,) = tables(Comparison._meta.get_field("completion_a").related_model)
    return (
        f"{prompt}.text, {prompt}.messages, ta.text, tb.text",
        f"JOIN {completion} ta ON ta.id = {comparison}.completion_a_id"
        f" JOIN {completion} tb ON tb.id = {comparison}.completion_b_id",
    )


def pair_texts(*, assignment_id: int) -> PairTexts:
    """The texts of an assignment's pair, for an assignment that came without them."""
    assignment, comparison, prompt = tables(Assignment, Comparison, Prompt)
    texts, completions = _texts("c", "p")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {texts} FROM {assignment} s"
            f" JOIN {comparison} c ON c.id = s.comparison_id JOIN {prompt} p ON p.id = c.prompt_id {completions}"
            " WHERE s.id = %s",
            [assignment_id],
        )
        return PairTexts.from_row(cursor.fetchone())


def _has_room(alias: str, *, now: datetime, campaign: Campaign) -> tuple[str, list]:
    """The cap, as SQL on comparison `alias`: a regular pair has room while its judgments plus
    its live leases are fewer than the campaign's N. Gold pairs have a known answer and exist
    to measure annotators, so each annotator may get each once: they have no cap."""
    (assignment,) = tables(Assignment)
    sql = (
        f"({alias}.is_gold OR {alias}.judgments_count + (SELECT count(*) FROM {assignment} l"
        f" WHERE l.comparison_id = {alias}.id AND l.state = %s AND l.leased_until > %s) < %s)"
    )
    return sql, [AssignmentState.LEASED, db_timestamp(now), campaign.annotations_per_pair]


def _not_seen_by(alias: str) -> str:
    """An annotator never sees a pair twice, whatever happened to the first lease (one %s: the annotator)."""
    (assignment,) = tables(Assignment)
    return f"NOT EXISTS (SELECT 1 FROM {assignment} s WHERE s.comparison_id = {alias}.id AND s.annotator_id = %s)"


def _claimable(*, campaign: Campaign, annotator: User, gold: bool, now: datetime) -> tuple[list[str], list]:
    """FROM and WHERE of the campaign's open pairs (gold or regular) this annotator may be given.

    A pair with an unresolved flag is held back from everyone until an admin resolves the flag
    (keeping the pair in the queue) or retires the pair."""
    comparison, prompt, flag = tables(Comparison, Prompt, Flag)
    room, room_params = _has_room("c", now=now, campaign=campaign)
    sql = [
        f"FROM {comparison} c JOIN {prompt} p ON p.id = c.prompt_id",
        f"WHERE p.campaign_id = %s AND p.enabled AND c.status = '{ComparisonStatus.OPEN}'",
        f"AND {'c.is_gold' if gold else 'NOT c.is_gold'}",
        f"AND {_not_seen_by('c')}",
        f"AND NOT EXISTS (SELECT 1 FROM {flag} f WHERE f.comparison_id = c.id AND f.resolved_at IS NULL)",
        f"AND {room}",
    ]
    return sql, [campaign.pk, annotator.pk, *room_params]


def comparison_claim_sql(
    *, campaign: Campaign, annotator: User, gold: bool, now: datetime, exclude: list[int], lock: str | None
) -> tuple[str, list]:
    """SQL for the first open pair of the campaign this annotator may be given, in serving order.

    With `lock` "skip", the row is locked FOR UPDATE SKIP LOCKED; with "wait", FOR UPDATE (waiting for
    a concurrent claim of that row to commit). Either way the lease's insert re-checks the cap
    (lease_if_room), because this statement's snapshot may predate a lease committed a moment ago.

    For regular pairs it walks the comparison_queue index (open, non-gold, by
    priority, then pairs the active selection picked, then age) and stops at the first free row.
    """
    where, params = _claimable(campaign=campaign, annotator=annotator, gold=gold, now=now)
    sql = ["SELECT c.id, c.prompt_id, c.completion_a_id, c.completion_b_id", *where]
    if exclude:
        sql.append(f"AND c.id NOT IN ({', '.join(['%s'] * len(exclude))})")
        params += exclude
    sql.append("ORDER BY c.priority DESC, c.selection_rank DESC, c.id LIMIT 1")
    if lock and connection.features.has_select_for_update_skip_locked:
        sql.append("FOR UPDATE OF c" + (" SKIP LOCKED" if lock == "skip" else ""))
    return "\n".join(sql), params


def claimable_count(*, campaign: Campaign, annotator: User, gold: bool, now: datetime, limit: int) -> int:
    """How many of the campaign's open pairs (gold or regular) this annotator may be given now, counted up
    to `limit`: the full count is a walk over the whole campaign (an anti-join per pair), too much for a
    figure the labeling page asks for after every judgment."""
    where, params = _claimable(campaign=campaign, annotator=annotator, gold=gold, now=now)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM (SELECT 1 " + "\n".join(where) + "\nLIMIT %s) q", [*params, limit])
        return cursor.fetchone()[0]


def regular_work_left(*, campaign: Campaign, annotator: User, now: datetime) -> bool:
    """Whether a regular pair could be claimed by this annotator now (no lock taken)."""
    sql, params = comparison_claim_sql(campaign=campaign, annotator=annotator, gold=False, now=now, exclude=[], lock=None)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def lease_if_room(*, comparison_id: int, annotator: User, campaign: Campaign, now: datetime) -> Assignment | None:
    """Lease the (row-locked) pair to the annotator if it still has room as of now; None if it filled up.

    One INSERT ... SELECT that re-checks the cap: it runs after the claim's row
    lock is held, so under READ COMMITTED it sees every lease committed before
    the lock was granted, including any the claim's snapshot missed. Gold pairs
    have no cap; the unique constraint (one lease per annotator and pair) is checked too.
    """
    assignment, comparison = tables(Assignment, Comparison)
    leased, left_is_a, leased_until = AssignmentState.LEASED, secrets.randbelow(2) == 0, now + campaign.lease
    room, room_params = _has_room("c", now=now, campaign=campaign)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {assignment} (comparison_id, annotator_id, left_is_a, leased_until, state, created_at)"
            f" SELECT c.id, %s, %s, %s, %s, %s FROM {comparison} c WHERE c.id = %s AND {_not_seen_by('c')} AND {room}"
            " RETURNING id",
            [
                annotator.pk, left_is_a, db_timestamp(leased_until), leased, db_timestamp(now),
                comparison_id, annotator.pk, *room_params,
            ],
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        return None
    return loaded(
        Assignment,
        id=row[0],
        comparison_id=comparison_id,
        annotator_id=annotator.pk,
        left_is_a=left_is_a,
        leased_until=leased_until,
        state=leased,
        created_at=now,
    )


def lease_first_free(*, campaign: Campaign, annotator: User, gold: bool, now: datetime) -> Assignment | None:
    """Claim and lease the first free pair, with its texts (`pair_texts`); None if there is none.

    The first walk locks rows SKIP LOCKED: concurrent annotators never wait on, or double-claim, a row.
    It passes over the rows other annotators are claiming at that instant, and a pair one of them takes
    may keep room for this annotator (N > 1), so before answering "nothing left" a second walk waits for
    those claims to commit. A waiting claim must hold no other pair's lock (two of them could wait on each
    other): it waits only if the first walk locked no pair that turned out full (if it did, a rare race,
    "nothing left" may come early, as before), and each of its own tries runs in a savepoint, whose rollback
    releases a pair that turned out full.
    """
    rejected: list[int] = []
    while (row := _claim(campaign=campaign, annotator=annotator, gold=gold, now=now, exclude=rejected, lock="skip")):
        if (assignment := _lease(row, campaign=campaign, annotator=annotator, now=now)) is not None:
            return assignment
        # Filled by a claim that committed after our snapshot: rare, try the next one.
        rejected.append(row[0])
    if rejected or not connection.features.has_select_for_update_skip_locked:
        return None
    while True:
        savepoint = transaction.savepoint()
        row = _claim(campaign=campaign, annotator=annotator, gold=gold, now=now, exclude=rejected, lock="wait")
        assignment = None if row is None else _lease(row, campaign=campaign, annotator=annotator, now=now)
        if row is None or assignment is not None:
            transaction.savepoint_commit(savepoint)
            return assignment
        transaction.savepoint_rollback(savepoint)
        rejected.append(row[0])


def _claim(
    *, campaign: Campaign, annotator: User, gold: bool, now: datetime, exclude: list[int], lock: str
) -> tuple | None:
    """The claimed pair's id and texts, its row locked; None if there is no free pair."""
    (prompt,) = tables(Prompt)
    texts, completions = _texts("q", "p")
    sql, params = comparison_claim_sql(
        campaign=campaign, annotator=annotator, gold=gold, now=now, exclude=exclude, lock=lock
    )
    # The texts are joined outside the claim, so they are read for the one row it returns.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT q.id, {texts} FROM ({sql}) q JOIN {prompt} p ON p.id = q.prompt_id {completions}", params)
        return cursor.fetchone()


def _lease(row: tuple, *, campaign: Campaign, annotator: User, now: datetime) -> Assignment | None:
    assignment = lease_if_room(comparison_id=row[0], annotator=annotator, campaign=campaign, now=now)
    if assignment is not None:
        assignment.pair_texts = PairTexts.from_row(row[1:])
    return assignment


def lock_annotator(annotator: User) -> None:
    """Serialize one annotator's claims (a double click): without this, two requests
    could each find no held lease and each claim a pair. (SQLite has one writer at a time anyway.)"""
    if connection.features.has_select_for_update:
        (user,) = tables(User)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {user} WHERE id = %s FOR NO KEY UPDATE", [annotator.pk])


# What submit needs of a campaign: read with the locked assignment, in the same statement.
_CAMPAIGN_RULES = (
    "id", "annotations_per_pair", "allow_tie", "allow_both_bad", "strength_scale", "rationale_required", "lease_seconds"
)  # fmt: skip


@dataclass(frozen=True)
class Lease:
    """An assignment of the caller's, row-locked with its pair, and what submit needs of both."""

    assignment: Assignment
    is_gold: bool
    judgments_count: int
    status: str
    campaign: Campaign
    source: JudgmentSource


def owned_assignment(*, assignment_id: int, annotator: User) -> Lease:
    """The caller's assignment with its pair, both row-locked; Assignment.DoesNotExist for anyone else's.

    Lock order everywhere: an assignment before its comparison (a claim locks
    only comparisons), so no two of these transactions can deadlock.
    """
    assignment, comparison, prompt, campaign = tables(Assignment, Comparison, Prompt, Campaign)
    user_groups, group = tables(User.groups.through, Group)
    lock = " FOR UPDATE OF a, c" if connection.features.has_select_for_update_of else ""
    rules = ", ".join(f"k.{name}" for name in _CAMPAIGN_RULES)
    found = fetch_one(
        Assignment,
        f"SELECT {columns(Assignment, 'a')}, c.is_gold, c.judgments_count, c.status,"
        f" EXISTS (SELECT 1 FROM {user_groups} ug JOIN {group} g ON g.id = ug.group_id"
        f" WHERE ug.user_id = a.annotator_id AND g.name = %s), {rules}"
        f" FROM {assignment} a JOIN {comparison} c ON c.id = a.comparison_id"
        f" JOIN {prompt} p ON p.id = c.prompt_id JOIN {campaign} k ON k.id = p.campaign_id"
        f" WHERE a.id = %s AND a.annotator_id = %s{lock}",
        [SIMULATED_GROUP, assignment_id, annotator.pk],
    )
    if found is None:
        raise Assignment.DoesNotExist(f"No assignment {assignment_id} of {annotator}.")
    lease, (is_gold, judgments_count, status, simulated, *campaign_values) = found
    return Lease(
        assignment=lease,
        is_gold=bool(is_gold),
        judgments_count=judgments_count,
        status=status,
        campaign=loaded(Campaign, **dict(zip(_CAMPAIGN_RULES, campaign_values))),
        source=JudgmentSource.SIMULATED if simulated else JudgmentSource.HUMAN,
    )


def record_judgment(*, lease: Lease, annotator: User, **values: object) -> Judgment:
    """Store the judgment, close the assignment and count it on the pair (completing it at N).

    Three writes; on PostgreSQL they go as one statement (data-modifying CTEs), one round trip."""
    assignment = lease.assignment
    judgment_table, assignment_table, comparison_table = tables(Judgment, Assignment, Comparison)
    values = {
        "assignment_id": assignment.pk,
        "comparison_id": assignment.comparison_id,
        "annotator_id": annotator.pk,
        "left_is_a": assignment.left_is_a,
        "source": lease.source,
        **values,
        "created_at": timezone.now(),
    }
    count = lease.judgments_count + 1
    complete = not lease.is_gold and count >= lease.campaign.annotations_per_pair
    insert = (
        f"INSERT INTO {judgment_table} ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
        [db_timestamp(v) if name == "created_at" else v for name, v in values.items()],
    )
    close = f"UPDATE {assignment_table} SET state = %s WHERE id = %s", [AssignmentState.SUBMITTED, assignment.pk]
    tally = (
        f"UPDATE {comparison_table} SET judgments_count = %s, status = %s WHERE id = %s",
        [count, ComparisonStatus.COMPLETE if complete else lease.status, assignment.comparison_id],
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH j AS ({insert[0]}), a AS ({close[0]}), c AS ({tally[0]}) SELECT id FROM j",
                [*insert[1], *close[1], *tally[1]],
            )
            (judgment_id,) = cursor.fetchone()
        else:
            cursor.execute(*insert)
            (judgment_id,) = cursor.fetchone()
            cursor.execute(*close)
            cursor.execute(*tally)
    return loaded(Judgment, id=judgment_id, **values)

import hashlib
import io
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from tqdm import tqdm

from labeling import importers, selectors
from labeling.models import (
    Assignment,
    AssignmentState,
    Campaign,
    Choice,
    Comparison,
    ComparisonStatus,
    Judgment,
    JudgmentSource,
    Prompt,
    Split,
    StrengthScale,
    Tag,
)

ANNOTATOR_GROUP = "annotators"
# Scripted annotators (the simulation harness) are marked by this group: their judgments are stored as simulated.
SIMULATED_GROUP = "simulated annotators"
_BATCH = 2000


@dataclass(frozen=True)
class ImportResult:
    created: int
    duplicates: int

    def __str__(self) -> str:
        return f"imported {self.created} prompts, skipped {self.duplicates} duplicates"


def _counting(stream: Iterable[str], bar: tqdm) -> Iterator[str]:
    """Yields the stream's lines, advancing a byte-sized progress bar."""
    for line in stream:
        bar.update(len(line.encode("utf-8")))
        yield line


def prompts_import(
    *,
    campaign: Campaign,
    stream: io.TextIOBase,
    source: str,
    fmt: str | None = None,
    size: int | None = None,
    progress: bool = False,
) -> ImportResult:
    """Import a prompt file whole or not at all.

    The file is parsed and validated first (a bad line raises PromptFileError
    naming it); only then is anything written, in one transaction. Prompts whose
    normalized content already exists in the campaign, or repeats earlier in the
    file, are skipped and counted.
    """
    fmt = fmt or importers.detect_format(source)
    name = os.path.basename(source)
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {name}", disable=not progress) as bar:
        rows = list(importers.parse(_counting(stream, bar), source=name, fmt=fmt))

    with transaction.atomic():
        # Lock the campaign row: concurrent imports into one campaign queue up
        # instead of racing on the unique content hash.
        Campaign.objects.select_for_update().get(pk=campaign.pk)
        existing = set(Prompt.objects.filter(campaign=campaign).values_list("content_hash", flat=True))
        fresh: dict[str, importers.PromptRow] = {}
        for row in rows:
            key = row.content_hash
            if key not in existing and key not in fresh:
                fresh[key] = row
        prompts = [
            Prompt(
                campaign=campaign,
                text=row.text,
                messages=row.messages,
                content_hash=key,
                split=row.split,
                priority=row.priority,
                source=name[:255],
                external_id=row.external_id,
            )
            for key, row in fresh.items()
        ]
        for start in tqdm(range(0, len(prompts), _BATCH), desc="storing", unit="batch", disable=not progress):
            Prompt.objects.bulk_create(prompts[start : start + _BATCH])
        _attach_tags(prompts, [row.tags for row in fresh.values()])
    return ImportResult(created=len(prompts), duplicates=len(rows) - len(prompts))


def _attach_tags(prompts: list[Prompt], tag_lists: list[list[str]]) -> None:
    names = {name for tags in tag_lists for name in tags}
    if not names:
        return
    Tag.objects.bulk_create([Tag(name=n) for n in names], ignore_conflicts=True)
    tag_ids = dict(Tag.objects.filter(name__in=names).values_list("name", "id"))
    through = Prompt.tags.through
    links = [
        through(prompt_id=prompt.pk, tag_id=tag_ids[name])
        for prompt, tags in zip(prompts, tag_lists)
        for name in tags
    ]
    through.objects.bulk_create(links, batch_size=_BATCH)


def prompts_set_enabled(*, prompts: QuerySet[Prompt], enabled: bool) -> int:
    return prompts.update(enabled=enabled)


def _heldout_draw(seed: int, content_hash: str) -> float:
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@transaction.atomic
def prompts_assign_heldout(*, prompts: QuerySet[Prompt], fraction: float, seed: int) -> int:
    """Put about `fraction` of `prompts` in the held-out split, the rest in train.

    Each prompt's side depends only on (seed, its content hash): the same seed
    gives the same split on any machine, and adding prompts never moves old ones.
    Returns how many prompts are held out.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    heldout, train = [], []
    for pk, key in prompts.values_list("pk", "content_hash").iterator(chunk_size=_BATCH):
        (heldout if _heldout_draw(seed, key) < fraction else train).append(pk)
    for ids, split in ((heldout, Split.HELDOUT), (train, Split.TRAIN)):
        for start in range(0, len(ids), _BATCH):
            Prompt.objects.filter(pk__in=ids[start : start + _BATCH]).update(split=split)
    return len(heldout)


def campaign_get_or_create(*, name: str, **defaults: object) -> tuple[Campaign, bool]:
    return Campaign.objects.get_or_create(name=name, defaults=defaults)


@transaction.atomic
def annotator_create(*, username: str, password: str, email: str = "", simulated: bool = False) -> User:
    """Create (or update the password of) an annotator: a non-staff user in the annotators group.

    A `simulated` annotator is a script, marked as one: every judgment it submits is stored as simulated.
    """
    user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
    user.set_password(password)
    user.save()
    for name in (ANNOTATOR_GROUP, SIMULATED_GROUP) if simulated else (ANNOTATOR_GROUP,):
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)
    return user



@transaction.atomic
def campaign_copy_scratch(*, campaign: Campaign) -> Campaign:
    """A scratch copy of the campaign for simulated annotators: its settings, prompts (with their split,
    priority and tags) and active policy, and none of its pairs or judgments, so a simulation neither
    takes pairs from the human queue nor mixes into the campaign's figures."""
    copy = Campaign.objects.get(pk=campaign.pk)
    copy.pk = None
    copy.name = f"{campaign.name} · simulation {timezone.now():%Y-%m-%d %H:%M:%S.%f}"[:200]
    copy.save()
    prompts = list(Prompt.objects.filter(campaign=campaign).order_by("pk").prefetch_related("tags"))
    tag_lists = [[tag.name for tag in prompt.tags.all()] for prompt in prompts]
    for prompt in prompts:
        prompt.pk, prompt.campaign = None, copy
    for start in range(0, len(prompts), _BATCH):
        Prompt.objects.bulk_create(prompts[start : start + _BATCH])
    _attach_tags(prompts, tag_lists)
    return copy


def campaign_set_active_policy(*, campaign: Campaign, policy_id: int | None) -> Campaign:
    """Point the campaign's generator at another policy (a generation.ModelVersion id)."""
    campaign.active_policy_id = policy_id
    campaign.save(update_fields=["active_policy"])
    return campaign


def comparisons_mark_gold(*, comparisons: QuerySet[Comparison], gold_choice: Choice) -> int:
    """Make the pairs gold with a known answer: they leave the regular queue and are mixed in at the gold rate."""
    return comparisons.update(is_gold=True, gold_choice=Choice(gold_choice))


# --- The work queue ------------------------------------------------------------
# Claim, skip and submit: each is one short transaction. Judgments are stored in
# terms of completion a/b; the side an annotator saw is recorded next to them.


@transaction.atomic
def prompts_set_priority(*, prompts: QuerySet[Prompt], priority: int) -> int:
    """Change the serving priority of prompts and of their pairs (the queue sorts on Comparison.priority)."""
    ids = list(prompts.values_list("pk", flat=True))
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        Prompt.objects.filter(pk__in=batch).update(priority=priority)
        Comparison.objects.filter(prompt_id__in=batch).update(priority=priority)
    return len(ids)


class LabelingError(Exception):
    """A request the queue refuses; `code` is stable for API clients."""

    code = "labeling_error"


class InvalidJudgment(LabelingError):
    code = "invalid_judgment"


class LeaseExpired(LabelingError):
    code = "lease_expired"


class AssignmentClosed(LabelingError):
    code = "assignment_closed"


class AlreadySubmitted(LabelingError):
    code = "already_submitted"


_SHOWN_TO_STORED = {
    # (shown choice, left_is_a) -> stored choice
    ("left", True): Choice.A,
    ("left", False): Choice.B,
    ("right", True): Choice.B,
    ("right", False): Choice.A,
}


def choice_from_shown(*, shown: str, left_is_a: bool) -> Choice:
    if shown in ("tie", "both_bad"):
        return Choice(shown)
    return _SHOWN_TO_STORED[(shown, left_is_a)]


def choice_to_shown(*, choice: str, left_is_a: bool) -> str:
    if choice in (Choice.TIE, Choice.BOTH_BAD):
        return str(choice)
    return "left" if (choice == Choice.A) == left_is_a else "right"


def _lease_if_room(*, comparison_id: int, annotator: User, campaign: Campaign, now: datetime) -> Assignment | None:
    """Lease the (row-locked) pair to the annotator if it still has room as of now; None if it filled up.

    One INSERT ... SELECT that re-checks the cap: it runs after the claim's row
    lock is held, so under READ COMMITTED it sees every lease committed before
    the lock was granted, including any the claim's snapshot missed. Gold pairs
    have no cap; the unique constraint (one lease per annotator and pair) is checked too.
    """
    assignment, comparison = selectors.tables(Assignment, Comparison)
    leased, left_is_a, leased_until = AssignmentState.LEASED, secrets.randbelow(2) == 0, now + campaign.lease
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {assignment} (comparison_id, annotator_id, left_is_a, leased_until, state, created_at)"
            f" SELECT c.id, %s, %s, %s, %s, %s FROM {comparison} c WHERE c.id = %s"
            f" AND NOT EXISTS (SELECT 1 FROM {assignment} s WHERE s.comparison_id = c.id AND s.annotator_id = %s)"
            f" AND (c.is_gold OR c.judgments_count + (SELECT count(*) FROM {assignment} l"
            " WHERE l.comparison_id = c.id AND l.state = %s AND l.leased_until > %s) < %s)"
            " RETURNING id",
            [
                annotator.pk, left_is_a, selectors.db_timestamp(leased_until), leased, selectors.db_timestamp(now),
                comparison_id,
                annotator.pk,
                leased, selectors.db_timestamp(now), campaign.annotations_per_pair,
            ],
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        return None
    return selectors.loaded(
        Assignment,
        id=row[0],
        comparison_id=comparison_id,
        annotator_id=annotator.pk,
        left_is_a=left_is_a,
        leased_until=leased_until,
        state=leased,
        created_at=now,
    )


def _lease_first_free(*, campaign: Campaign, annotator: User, gold: bool, now: datetime) -> Assignment | None:
    rejected: list[int] = []
    while True:
        # SKIP LOCKED: concurrent annotators never wait on, or double-claim, a row.
        sql, params = selectors.comparison_claim_sql(
            campaign=campaign, annotator=annotator, gold=gold, now=now, exclude=rejected, lock=True
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        assignment = _lease_if_room(comparison_id=row[0], annotator=annotator, campaign=campaign, now=now)
        if assignment is not None:
            return assignment
        # Filled by a claim that committed after our snapshot: rare, try the next one.
        rejected.append(row[0])


def _lock_annotator(annotator: User) -> None:
    """Serialize one annotator's claims (a double click): without this, two requests
    could each find no held lease and each claim a pair. (SQLite has one writer at a time anyway.)"""
    if connection.features.has_select_for_update:
        (user,) = selectors.tables(User)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {user} WHERE id = %s FOR NO KEY UPDATE", [annotator.pk])


@transaction.atomic
def assignment_next(*, campaign: Campaign, annotator: User, after_id: int | None = None) -> Assignment | None:
    """The pair this annotator should judge next, leased to them; None when nothing is left.

    An unexpired lease the annotator already holds comes first (a reload or a
    retried request must not claim a second pair). `after_id` names the pair
    now on screen, so the page can prefetch the one after it: an annotator
    holds at most two leases per campaign. Gold pairs are mixed into real work
    at the campaign's rate, only while regular work is left.
    """
    now = timezone.now()
    _lock_annotator(annotator)
    held = selectors.assignment_live(annotator=annotator, campaign=campaign, now=now, other_than=after_id)
    if held is not None:
        return held
    if campaign.gold_rate and secrets.SystemRandom().random() < campaign.gold_rate:
        sql, params = selectors.comparison_claim_sql(
            campaign=campaign, annotator=annotator, gold=False, now=now, exclude=[], lock=False
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            regular_left = cursor.fetchone() is not None
        if regular_left:
            gold = _lease_first_free(campaign=campaign, annotator=annotator, gold=True, now=now)
            if gold is not None:
                return gold
    return _lease_first_free(campaign=campaign, annotator=annotator, gold=False, now=now)


# What submit needs of a campaign: read with the locked assignment, in the same statement.
_CAMPAIGN_RULES = ("id", "annotations_per_pair", "allow_tie", "allow_both_bad", "strength_scale", "rationale_required")


@dataclass(frozen=True)
class _Lease:
    """An assignment of the caller's, row-locked with its pair, and what submit needs of both."""

    assignment: Assignment
    is_gold: bool
    judgments_count: int
    status: str
    campaign: Campaign
    source: JudgmentSource


def _owned_assignment(*, assignment_id: int, annotator: User) -> _Lease:
    """The caller's assignment with its pair, both row-locked; Assignment.DoesNotExist for anyone else's.

    Lock order everywhere: an assignment before its comparison (a claim locks
    only comparisons), so no two of these transactions can deadlock.
    """
    assignment, comparison, prompt, campaign = selectors.tables(Assignment, Comparison, Prompt, Campaign)
    user_groups, group = selectors.tables(User.groups.through, Group)
    lock = " FOR UPDATE OF a, c" if connection.features.has_select_for_update_of else ""
    rules = ", ".join(f"k.{name}" for name in _CAMPAIGN_RULES)
    found = selectors.fetch_one(
        Assignment,
        f"SELECT {selectors.columns(Assignment, 'a')}, c.is_gold, c.judgments_count, c.status,"
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
    return _Lease(
        assignment=lease,
        is_gold=bool(is_gold),
        judgments_count=judgments_count,
        status=status,
        campaign=selectors.loaded(Campaign, **dict(zip(_CAMPAIGN_RULES, campaign_values))),
        source=JudgmentSource.SIMULATED if simulated else JudgmentSource.HUMAN,
    )


def _record_judgment(*, lease: _Lease, annotator: User, **values: object) -> Judgment:
    """Store the judgment, close the assignment and count it on the pair (completing it at N): three short statements."""
    assignment = lease.assignment
    judgment_table, assignment_table, comparison_table = selectors.tables(Judgment, Assignment, Comparison)
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
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {judgment_table} ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
            [selectors.db_timestamp(v) if name == "created_at" else v for name, v in values.items()],
        )
        (judgment_id,) = cursor.fetchone()
        cursor.execute(
            f"UPDATE {assignment_table} SET state = %s WHERE id = %s", [AssignmentState.SUBMITTED, assignment.pk]
        )
        cursor.execute(
            f"UPDATE {comparison_table} SET judgments_count = %s, status = %s WHERE id = %s",
            [count, ComparisonStatus.COMPLETE if complete else lease.status, assignment.comparison_id],
        )
    return selectors.loaded(Judgment, id=judgment_id, **values)


@transaction.atomic
def assignment_skip(*, assignment_id: int, annotator: User) -> Assignment:
    """Give a leased pair back to the pool; this annotator will not be shown it again. Idempotent."""
    assignment = _owned_assignment(assignment_id=assignment_id, annotator=annotator).assignment
    if assignment.state == AssignmentState.SUBMITTED:
        raise AssignmentClosed("This pair was already judged; it cannot be skipped.")
    if assignment.state == AssignmentState.LEASED:
        assignment.state = AssignmentState.SKIPPED
        assignment.save(update_fields=["state"])
    return assignment


@dataclass(frozen=True)
class SubmitResult:
    judgment: Judgment
    created: bool


_EXPIRED_MESSAGE = "Your time on this pair ran out and it went back to the pool; this answer was not stored."
_RATIONALE_MAX = 5000
_TIME_MS_MAX = 24 * 3600 * 1000


def _validate_judgment(
    *, campaign: Campaign, shown: str, strength: int | None, rationale: str, time_ms: int | None
) -> None:
    allowed = selectors.campaign_allowed_choices(campaign=campaign)
    if shown not in allowed:
        raise InvalidJudgment(f"choice must be one of {', '.join(allowed)}, not {shown!r}")
    if strength is not None:
        if campaign.strength_scale != StrengthScale.THREE:
            raise InvalidJudgment("this campaign takes no strength")
        if shown not in selectors.SIDES:
            raise InvalidJudgment("strength goes with left or right, not with tie or both bad")
        if strength not in (1, 2, 3):
            raise InvalidJudgment("strength must be 1 (slightly), 2 (clearly) or 3 (much better)")
    if campaign.rationale_required and not rationale.strip():
        raise InvalidJudgment("this campaign asks for a rationale")
    if len(rationale) > _RATIONALE_MAX:
        raise InvalidJudgment(f"the rationale is longer than {_RATIONALE_MAX} characters")
    if time_ms is not None and not 0 <= time_ms <= _TIME_MS_MAX:
        raise InvalidJudgment("time_ms must be between 0 and one day")


def judgment_submit(
    *,
    assignment_id: int,
    annotator: User,
    choice: str,
    strength: int | None = None,
    rationale: str = "",
    time_ms: int | None = None,
) -> SubmitResult:
    """Store the annotator's judgment on a leased pair, once.

    `choice` is in terms of the sides shown ("left", "right", "tie",
    "both_bad") and is stored as a/b using the order recorded at claim time.
    A repeat of an accepted submit (double click, retried request) returns the
    stored judgment with created=False. An expired, skipped or foreign lease
    stores nothing: LeaseExpired, AssignmentClosed, Assignment.DoesNotExist.
    """
    with transaction.atomic():
        lease = _owned_assignment(assignment_id=assignment_id, annotator=annotator)
        assignment, campaign = lease.assignment, lease.campaign
        _validate_judgment(campaign=campaign, shown=choice, strength=strength, rationale=rationale, time_ms=time_ms)
        stored = choice_from_shown(shown=choice, left_is_a=assignment.left_is_a)
        if assignment.state == AssignmentState.SUBMITTED:
            judgment = assignment.judgment
            if (judgment.choice, judgment.strength, judgment.rationale) != (stored, strength, rationale):
                raise AlreadySubmitted("This pair was already judged with a different answer; it was not changed.")
            return SubmitResult(judgment=judgment, created=False)
        if assignment.state == AssignmentState.EXPIRED:
            raise LeaseExpired(_EXPIRED_MESSAGE)
        if assignment.state == AssignmentState.SKIPPED:
            raise AssignmentClosed("You skipped this pair; nothing was stored.")
        # The cap is re-checked under the pair's lock, so a lease judged after it
        # expired and was handed to someone else can never push a pair past N.
        n = campaign.annotations_per_pair
        full = not lease.is_gold and lease.judgments_count >= n
        if assignment.leased_until > timezone.now() and not full:
            judgment = _record_judgment(
                lease=lease, annotator=annotator, choice=stored, strength=strength, rationale=rationale, time_ms=time_ms
            )
            return SubmitResult(judgment=judgment, created=True)
        assignment.state = AssignmentState.EXPIRED
        assignment.save(update_fields=["state"])
    # Raised after the commit, so the lease stays marked expired.
    raise LeaseExpired(_EXPIRED_MESSAGE)


@transaction.atomic
def comparisons_create(*, rows: list[tuple[int, int, int]]) -> int:
    """Open a comparison for each (prompt_id, completion_a_id, completion_b_id) row; returns how many.

    Generation calls this inside its per-chunk transaction. Each comparison takes
    its prompt's priority, which the work queue sorts on.
    """
    priorities = dict(Prompt.objects.filter(pk__in={prompt_id for prompt_id, _, _ in rows}).values_list("pk", "priority"))
    comparisons = Comparison.objects.bulk_create(
        Comparison(prompt_id=prompt_id, completion_a_id=a_id, completion_b_id=b_id, priority=priorities[prompt_id])
        for prompt_id, a_id, b_id in rows
    )
    return len(comparisons)

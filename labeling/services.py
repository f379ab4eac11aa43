import hashlib
import io
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import Max, QuerySet
from django.utils import timezone
from rest_framework.authtoken.models import Token
from tqdm import tqdm

from labeling import authentication, bulk, importers, queue, selection, selectors
from labeling.models import (
    SIMULATED_GROUP,
    Assignment,
    AssignmentState,
    Campaign,
    Choice,
    Comparison,
    ComparisonStatus,
    Flag,
    FlagReason,
    Judgment,
    JudgmentRevision,
    JudgmentSource,
    Prompt,
    Split,
    StrengthScale,
    Tag,
)

ANNOTATOR_GROUP = "annotators"
_BATCH = 2000


@dataclass(frozen=True)
class ImportResult:
    created: int
    duplicates: int
    format: str = ""  # as detected, for people: "CSV", "JSONL (chat messages)", ... (importers.describe_format)
    rows: tuple[importers.PromptRow, ...] = field(default=(), repr=False, compare=False)  # the created prompts' rows

    def __str__(self) -> str:
        return f"imported {self.created} prompts, skipped {self.duplicates} duplicates"


def _counting(stream: Iterable[str], bar: tqdm) -> Iterator[str]:
    """Yields the stream's lines, advancing a byte-sized progress bar."""
    for line in stream:
        bar.update(len(line.encode("utf-8", "surrogateescape")))  # undecodable bytes are counted, reported later
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

    The file is parsed and validated first (bad lines raise PromptFileError
    listing them); only then is anything written, in one transaction. Prompts whose
    normalized content already exists in the campaign, or repeats earlier in the
    file, are skipped and counted.
    """
    fmt = fmt or importers.detect_format(source)
    name = os.path.basename(source)
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {name}", disable=not progress) as bar:
        rows = importers.parse(_counting(stream, bar), source=name, fmt=fmt)

    with transaction.atomic():
        fresh = prompts_store(campaign=campaign, rows=rows, source=name, progress=progress)
    return ImportResult(
        created=len(fresh),
        duplicates=len(rows) - len(fresh),
        format=importers.describe_format(fmt, rows),
        rows=tuple(fresh),
    )


OVER_CONTEXT_LINES_SHOWN = 20


def prompts_over_context_warning(*, campaign: Campaign, source: str, result: ImportResult) -> str | None:
    """A warning that names (count and line numbers) the prompts of an import longer than the campaign's policy's
    context, which generation will skip or truncate; None when all fit. The import command prints it, the admin's
    upload shows it. A campaign with no policy yet is measured against settings.POLICY_MODEL, which its first
    generation job starts from, when that is a folder here. Only the tokenizer is loaded, never the model."""
    policy, context, note = campaign.active_policy, "", ""
    if policy is None and os.path.isdir(settings.POLICY_MODEL):
        # Unsaved: measuring registers nothing (the first job does, generation.services.campaign_policy_next).
        policy = Campaign._meta.get_field("active_policy").related_model(base_path=settings.POLICY_MODEL)
        first = os.path.basename(os.path.normpath(settings.POLICY_MODEL))
        context, note = f"the context of {first}", "POLICY_MODEL, which the campaign's first generation job uses; "
    if policy is None or not result.rows:
        return None
    over = policy.prompts_over_context(list(result.rows))
    if not over:
        return None
    context = context or f"policy {policy.name}'s context"
    lines = ", ".join(str(result.rows[i].line) for i, _ in over[:OVER_CONTEXT_LINES_SHOWN])
    more = f" and {len(over) - OVER_CONTEXT_LINES_SHOWN} more" if len(over) > OVER_CONTEXT_LINES_SHOWN else ""
    what = (
        "generation drops their earliest chat turns or skips them"
        if campaign.truncate_long_prompts
        else "generation skips them"
    )
    return (
        f"{len(over)} prompt{'s' if len(over) != 1 else ''} of {source} {'are' if len(over) != 1 else 'is'} longer "
        f"than {context} ({policy.context_length():,} tokens; {note}the {what}): "
        f"line{'s' if len(over) != 1 else ''} {lines}{more}"
    )


def prompts_import_into_named_campaign(
    *,
    name: str,
    campaign_settings: dict[str, object] | None = None,
    stream: io.TextIOBase,
    source: str,
    fmt: str | None = None,
    size: int | None = None,
    progress: bool = False,
) -> tuple[Campaign, bool, ImportResult]:
    """prompts_import into the campaign called `name`, created with `campaign_settings` when missing.

    One transaction: a refused file (PromptFileError) leaves no new, empty campaign behind.
    Returns the campaign, whether it was created, and the import's result.
    """
    with transaction.atomic():
        campaign, created = campaign_get_or_create(name=name, **(campaign_settings or {}))
        result = prompts_import(campaign=campaign, stream=stream, source=source, fmt=fmt, size=size, progress=progress)
    return campaign, created, result


def prompts_store(
    *, campaign: Campaign, rows: list[importers.PromptRow], source: str, progress: bool = False
) -> list[importers.PromptRow]:
    """Store the parsed rows as the campaign's prompts, skipping content the campaign already has (or that
    repeats earlier in `rows`); returns the rows stored. Runs inside the caller's transaction."""
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
            source=source[:255],
            external_id=row.external_id,
        )
        for key, row in fresh.items()
    ]
    for start in tqdm(range(0, len(prompts), _BATCH), desc="storing", unit="batch", disable=not progress):
        Prompt.objects.bulk_create(prompts[start : start + _BATCH])
    _attach_tags(prompts, [row.tags for row in fresh.values()])
    return list(fresh.values())


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


def user_set_password(*, user: User, password: str) -> None:
    """Set and save the user's password if Django's validators (AUTH_PASSWORD_VALIDATORS) accept it, else
    raise their ValidationError. The change also ends the user's API token (see labeling.authentication)."""
    password_validation.validate_password(password, user)
    user.set_password(password)
    user.save()


@transaction.atomic
def annotator_create(*, username: str, password: str, email: str = "", simulated: bool = False) -> User:
    """Create (or update the password of) an annotator: a non-staff user in the annotators group.
    A password the validators refuse raises their ValidationError and stores nothing.

    A `simulated` annotator is a script, marked as one: every judgment it submits is stored as simulated.
    """
    user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
    user_set_password(user=user, password=password)
    for name in (ANNOTATOR_GROUP, SIMULATED_GROUP) if simulated else (ANNOTATOR_GROUP,):
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)
    return user


@transaction.atomic
def api_token_issue(*, user: User) -> Token:
    """The user's API token: the one they hold while it lasts, else a new one in its place."""
    # One token per user: the user's row lock keeps two logins at once from both replacing it.
    User.objects.select_for_update().get(pk=user.pk)
    token = Token.objects.filter(user=user).first()
    if (
        token is not None
        and token.created > authentication.token_issued_after()
        and authentication.token_is_current(key=token.key, user=user)
    ):
        return token
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user, key=authentication.token_key(user=user))



@transaction.atomic
def campaign_copy_scratch(*, campaign: Campaign) -> Campaign:
    """A scratch copy of the campaign for simulated annotators: its settings, prompts (with their split,
    priority and tags) and active policy, and none of its pairs or judgments, so a simulation neither
    takes pairs from the human queue nor mixes into the campaign's figures.

    The copy is members-only with no members (Django copies no many-to-many rows): no human annotator
    is offered it; the simulation adds its scripted annotators with `campaign_members_add`."""
    copy = Campaign.objects.get(pk=campaign.pk)
    copy.pk = None
    copy.name = f"{campaign.name} · simulation {timezone.now():%Y-%m-%d %H:%M:%S.%f}"[:200]
    copy.open_to_everyone = False
    copy.save()
    prompts = list(Prompt.objects.filter(campaign=campaign).order_by("pk").prefetch_related("tags"))
    tag_lists = [[tag.name for tag in prompt.tags.all()] for prompt in prompts]
    for prompt in prompts:
        prompt.pk, prompt.campaign = None, copy
    for start in range(0, len(prompts), _BATCH):
        Prompt.objects.bulk_create(prompts[start : start + _BATCH])
    _attach_tags(prompts, tag_lists)
    return copy


def campaign_members_add(*, campaign: Campaign, users: Iterable[User]) -> None:
    """Let these users label a members-only campaign."""
    campaign.members.add(*users)


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


@transaction.atomic
def pairs_select(
    *,
    campaign: Campaign,
    margins: Mapping[int, float | None],
    budget: int,
    seed: int = 0,
    entropies: Mapping[int, float] | None = None,
    decisive: Callable[[float, float], float] | None = None,
) -> dict[int, str]:
    """Pick the next batch of human work among scored candidates, by the campaign's pair_selection
    (`entropies`: the policy's predictive entropy at each candidate's prompt; `decisive`: how often an answer
    picks a side by |margin| and entropy, labeling.selection.decisive_curve).

    Every candidate keeps its margin and entropy (shown in the admin, exported); the picks are
    served first within their priority, in the order `choose` gives them (the most informative first):
    their selection_rank counts down by one a pick, the last pick just above the open picks of earlier
    batches, whose scores are older (a top-up follows a generation job, often of a newly promoted policy).
    Ids that are not open regular pairs of the campaign are ignored.
    """
    candidates = {
        pk: margins[pk]
        for pk in Comparison.objects.filter(
            pk__in=list(margins), prompt__campaign=campaign, status=ComparisonStatus.OPEN, is_gold=False
        ).values_list("pk", flat=True)
    }
    picks = selection.choose(
        candidates,
        budget=budget,
        mode=campaign.pair_selection,
        random_share=campaign.selection_random_share,
        seed=seed,
        entropies=entropies,
        decisive=decisive,
    )
    earlier = selectors.picked_open(campaign=campaign).exclude(pk__in=list(candidates))
    above = earlier.aggregate(top=Max("selection_rank"))["top"] or 0
    rank = {pk: above + len(picks) - position for position, pk in enumerate(picks)}
    rows = list(Comparison.objects.filter(pk__in=list(candidates)).select_for_update())
    for row in rows:
        row.policy_margin = candidates[row.pk]
        row.policy_entropy = (entropies or {}).get(row.pk)
        row.selected_by = picks.get(row.pk, "")
        row.selection_rank = rank.get(row.pk, 0)
    fields = ["policy_margin", "policy_entropy", "selected_by", "selection_rank"]
    Comparison.objects.bulk_update(rows, fields, batch_size=_BATCH)
    return picks


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


class UndoClosed(LabelingError):
    code = "undo_closed"


class InvalidFlag(LabelingError):
    code = "invalid_flag"


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
    queue.lock_annotator(annotator)
    held = queue.assignment_live(annotator=annotator, campaign=campaign, now=now, other_than=after_id)
    if held is not None:
        return held
    if campaign.gold_rate and secrets.SystemRandom().random() < campaign.gold_rate:
        if queue.regular_work_left(campaign=campaign, annotator=annotator, now=now):
            gold = queue.lease_first_free(campaign=campaign, annotator=annotator, gold=True, now=now)
            if gold is not None:
                return gold
    return queue.lease_first_free(campaign=campaign, annotator=annotator, gold=False, now=now)


@transaction.atomic
def assignment_skip(*, assignment_id: int, annotator: User) -> Assignment:
    """Give a leased pair back to the pool; this annotator will not be shown it again. Idempotent."""
    assignment = queue.owned_assignment(assignment_id=assignment_id, annotator=annotator).assignment
    if assignment.state == AssignmentState.SUBMITTED:
        raise AssignmentClosed("This pair was already judged; it cannot be skipped.")
    if assignment.state == AssignmentState.LEASED:
        assignment.state = AssignmentState.SKIPPED
        assignment.save(update_fields=["state"])
    return assignment


@transaction.atomic
def comparison_flag(*, assignment_id: int, annotator: User, reason: str, note: str = "") -> Flag:
    """Flag the pair of the annotator's assignment (unsafe, broken, unclear) and move on.

    A leased pair is given back as a skip would (this annotator is not shown it
    again), and no one else is offered it while the flag is unresolved: an admin
    resolves it (the pair goes back to the queue) or retires the pair. Flagging twice keeps the first flag.
    """
    if reason not in FlagReason.values:
        raise InvalidFlag(f"reason must be one of {', '.join(FlagReason.values)}, not {reason!r}")
    if len(note) > _RATIONALE_MAX:
        raise InvalidFlag(f"the note is longer than {_RATIONALE_MAX} characters")
    assignment = queue.owned_assignment(assignment_id=assignment_id, annotator=annotator).assignment
    flag, _ = Flag.objects.get_or_create(
        comparison_id=assignment.comparison_id, annotator=annotator, defaults={"reason": reason, "note": note}
    )
    if assignment.state == AssignmentState.LEASED:
        assignment.state = AssignmentState.SKIPPED
        assignment.save(update_fields=["state"])
    return flag


@transaction.atomic
def flags_resolve(*, flags: QuerySet[Flag], by: User, retire: bool = False) -> int:
    """Mark flags resolved; with `retire`, their pairs also leave the queue for everyone. Returns how many flags."""
    ids = list(flags.filter(resolved_at__isnull=True).values_list("pk", flat=True))
    if retire:
        Comparison.objects.filter(flags__in=flags).update(status=ComparisonStatus.RETIRED)
    return Flag.objects.filter(pk__in=ids).update(resolved_at=timezone.now(), resolved_by=by)


@dataclass(frozen=True)
class SubmitResult:
    judgment: Judgment
    created: bool
    revised: bool = False


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
        lease = queue.owned_assignment(assignment_id=assignment_id, annotator=annotator)
        assignment, campaign = lease.assignment, lease.campaign
        _validate_judgment(campaign=campaign, shown=choice, strength=strength, rationale=rationale, time_ms=time_ms)
        stored = choice_from_shown(shown=choice, left_is_a=assignment.left_is_a)
        if assignment.state == AssignmentState.SUBMITTED:
            return _resubmit(
                judgment=assignment.judgment, choice=stored, strength=strength, rationale=rationale, time_ms=time_ms
            )
        if assignment.state == AssignmentState.EXPIRED:
            raise LeaseExpired(_EXPIRED_MESSAGE)
        if assignment.state == AssignmentState.SKIPPED:
            raise AssignmentClosed("You skipped this pair; nothing was stored.")
        # The cap is re-checked under the pair's lock, so a lease judged after it
        # expired and was handed to someone else can never push a pair past N.
        n = campaign.annotations_per_pair
        full = not lease.is_gold and lease.judgments_count >= n
        if assignment.leased_until > timezone.now() and not full:
            judgment = queue.record_judgment(
                lease=lease, annotator=annotator, choice=stored, strength=strength, rationale=rationale, time_ms=time_ms
            )
            return SubmitResult(judgment=judgment, created=True)
        assignment.state = AssignmentState.EXPIRED
        assignment.save(update_fields=["state"])
    # Raised after the commit, so the lease stays marked expired.
    raise LeaseExpired(_EXPIRED_MESSAGE)


def _resubmit(*, judgment: Judgment, choice: str, strength: int | None, rationale: str, time_ms: int | None) -> SubmitResult:
    """A submit on a judged pair: a repeat changes nothing; a new answer to an undone judgment
    revises it (the old answer kept as a JudgmentRevision); any other change is refused."""
    now = timezone.now()
    reopened = judgment.reopened_until is not None and judgment.reopened_until > now
    if (judgment.choice, judgment.strength, judgment.rationale) == (choice, strength, rationale):
        if judgment.reopened_until is not None:
            judgment.reopened_until = None
            judgment.save(update_fields=["reopened_until"])
        return SubmitResult(judgment=judgment, created=False)
    if not reopened:
        raise AlreadySubmitted("This pair was already judged with a different answer; it was not changed.")
    JudgmentRevision.objects.create(
        judgment=judgment,
        choice=judgment.choice,
        strength=judgment.strength,
        rationale=judgment.rationale,
        time_ms=judgment.time_ms,
        answered_at=_answered_at(judgment),
        revised_at=now,
    )
    judgment.choice, judgment.strength, judgment.rationale = choice, strength, rationale
    judgment.time_ms, judgment.reopened_until = time_ms, None
    judgment.save(update_fields=["choice", "strength", "rationale", "time_ms", "reopened_until"])
    return SubmitResult(judgment=judgment, created=False, revised=True)


def _answered_at(judgment: Judgment) -> datetime:
    """When the judgment's current answer was given: its last revision, else its creation."""
    last = judgment.revisions.order_by("-revised_at").values_list("revised_at", flat=True).first()
    return last or judgment.created_at


@transaction.atomic
def judgment_reopen(*, assignment_id: int, annotator: User) -> Judgment:
    """Undo: reopen the annotator's judgment on this assignment, so their next submit revises it.

    Allowed for LABELING_UNDO_WINDOW_S after the answer was given, and only while
    the pair is not settled. A pair settles when it has its N judgments and the
    undo window of the last one has passed (or when it is retired), so within a
    judgment's own window the pair can only be settled by retirement. The judgment
    keeps counting toward its pair while reopened: the queue's counts and leases
    never move, and a reopened judgment that is never answered again stays as it was.
    The reopened judgment takes a new answer for as long as the campaign's lease.
    """
    lease = queue.owned_assignment(assignment_id=assignment_id, annotator=annotator)
    if lease.assignment.state != AssignmentState.SUBMITTED:
        raise UndoClosed("Nothing to undo: you have not judged this pair.")
    if lease.status == ComparisonStatus.RETIRED:
        raise UndoClosed("This pair is settled; your answer can no longer change.")
    judgment = Judgment.objects.get(assignment_id=assignment_id)
    now = timezone.now()
    if now - _answered_at(judgment) > timedelta(seconds=settings.LABELING_UNDO_WINDOW_S):
        raise UndoClosed(f"Too late to undo: answers can be undone for {settings.LABELING_UNDO_WINDOW_S} s.")
    judgment.reopened_until = now + lease.campaign.lease
    judgment.save(update_fields=["reopened_until"])
    return judgment


# Imported judgments are stored under this user: an inactive account no one logs in as, in no group.
IMPORTED_ANNOTATOR = "imported-data"


def imported_annotator() -> User:
    user, created = User.objects.get_or_create(username=IMPORTED_ANNOTATOR, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@transaction.atomic
def comparisons_create_judged(*, rows: list[tuple[int, int, int, str, str]], gold: bool) -> int:
    """Store a data set's judged pairs: for each (prompt_id, completion_a_id, completion_b_id, texts_digest,
    choice) row, a comparison with one judgment of source "imported"; returns how many.

    An imported label settles its pair on its own, so the pair is complete and never
    queued for annotators; with `gold`, it is instead a gold pair whose answer is the label,
    mixed into annotators' work at the campaign's gold rate.
    """
    annotator = imported_annotator()
    now = timezone.now()
    priorities = dict(Prompt.objects.filter(pk__in={row[0] for row in rows}).values_list("pk", "priority"))
    created = 0
    for start in range(0, len(rows), _BATCH):
        batch = rows[start : start + _BATCH]
        comparisons = Comparison.objects.bulk_create(
            Comparison(
                prompt_id=prompt_id,
                completion_a_id=a_id,
                completion_b_id=b_id,
                priority=priorities[prompt_id],
                texts_digest=digest,
                judgments_count=1,
                is_gold=gold,
                gold_choice=choice if gold else "",
                status=ComparisonStatus.OPEN if gold else ComparisonStatus.COMPLETE,
            )
            for prompt_id, a_id, b_id, digest, choice in batch
        )
        assignments = Assignment.objects.bulk_create(
            Assignment(
                comparison=c, annotator=annotator, left_is_a=True, leased_until=now, state=AssignmentState.SUBMITTED
            )
            for c in comparisons
        )
        Judgment.objects.bulk_create(
            Judgment(
                assignment=assignment,
                comparison=comparison,
                annotator=annotator,
                choice=Choice(choice),
                left_is_a=True,
                source=JudgmentSource.IMPORTED,
            )
            for assignment, comparison, (*_, choice) in zip(assignments, comparisons, batch)
        )
        created += len(comparisons)
    return created


@transaction.atomic
def comparisons_create(*, rows: list[tuple[int, int, int, str]]) -> int:
    """Open a comparison for each (prompt_id, completion_a_id, completion_b_id, texts_digest) row (the digest:
    models.pair_digest of the two texts); returns how many.

    Generation calls this inside its per-chunk transaction. Each comparison takes
    its prompt's priority, which the work queue sorts on.
    """
    priorities = dict(Prompt.objects.filter(pk__in={row[0] for row in rows}).values_list("pk", "priority"))
    return len(
        bulk.insert(
            Comparison,
            columns=("prompt", "completion_a", "completion_b", "texts_digest", "priority"),
            rows=[(*row, priorities[row[0]]) for row in rows],
        )
    )

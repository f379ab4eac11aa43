import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling import selection


class Choice(models.TextChoices):
    """A judgment, always in terms of completion a/b, never screen side."""

    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    HELDOUT = "heldout", "Held-out"


class StrengthScale(models.TextChoices):
    NONE = "none", "No strength"
    THREE = "three", "Slightly / clearly / much better"


class PairSelection(models.TextChoices):
    """labeling.selection's modes (it chooses by them, Django-free), with the admin's labels."""

    RANDOM = selection.RANDOM, "Random (serving order)"
    UNCERTAINTY = selection.UNCERTAINTY, "Where the policy is least sure"
    CERTAINTY = selection.CERTAINTY, "Where the policy is most sure, among prompts it is least sure how to answer"


class Campaign(models.Model):
    name = models.CharField(max_length=200, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown, shown to annotators one click away.")
    annotations_per_pair = models.PositiveSmallIntegerField(default=1, help_text="Judgments each pair needs (N).")
    allow_tie = models.BooleanField(default=True)
    allow_both_bad = models.BooleanField(default=True)
    strength_scale = models.CharField(max_length=10, choices=StrengthScale.choices, default=StrengthScale.THREE)
    rationale_required = models.BooleanField(default=False)
    gold_rate = models.FloatField(default=0.0, help_text="Share of served pairs that are gold (0-1).")
    lease_seconds = models.PositiveIntegerField(default=600)
    active_policy = models.ForeignKey(
        "generation.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The policy new generation jobs sample from.",
    )
    truncate_long_prompts = models.BooleanField(
        default=False,
        help_text="A chat prompt longer than the policy's context loses its earliest turns (never the last user "
        "turn) instead of being skipped.",
    )
    pair_selection = models.CharField(
        max_length=12,
        choices=PairSelection.choices,
        default=PairSelection.RANDOM,
        help_text="How a batch of human work is picked from more candidate pairs than the label budget "
        "(labeling.selection).",
    )
    selection_random_share = models.FloatField(
        default=0.2,
        help_text="With uncertainty or certainty selection, the share of each batch still picked at random, "
        "so the estimates stay calibrated (0-1).",
    )
    is_active = models.BooleanField(default=True)
    open_to_everyone = models.BooleanField(
        default=True, help_text="Every annotator may label it; otherwise only the members and groups chosen below."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="labeling_campaigns", help_text="Annotators who may label it."
    )
    member_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="labeling_campaigns", help_text="Groups whose annotators may label it."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(annotations_per_pair__gte=1), name="campaign_n_at_least_1"),
            models.CheckConstraint(condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="campaign_gold_rate_0_1"),
            models.CheckConstraint(condition=Q(lease_seconds__gte=10), name="campaign_lease_at_least_10s"),
            models.CheckConstraint(
                condition=Q(selection_random_share__gte=0) & Q(selection_random_share__lte=1),
                name="campaign_selection_random_share_0_1",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)


class Tag(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField(blank=True, help_text="The prompt as plain text (empty for chat prompts).")
    messages = models.JSONField(null=True, blank=True, help_text="Chat prompt: a list of {role, content}.")
    content_hash = models.CharField(max_length=64, help_text="sha256 of the normalized content.")
    tags = models.ManyToManyField(Tag, blank=True, related_name="prompts")
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=0, help_text="Higher is served first.")
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN)
    source = models.CharField(max_length=255, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "content_hash"], name="prompt_unique_content_per_campaign"),
            models.CheckConstraint(condition=Q(split__in=Split.values), name="prompt_split_valid"),
            models.CheckConstraint(
                condition=~Q(text="") | Q(messages__isnull=False), name="prompt_has_text_or_messages"
            ),
        ]
        indexes = [models.Index(fields=["campaign", "enabled", "split"])]

    def __str__(self) -> str:
        return self.display_text[:80]

    @property
    def display_text(self) -> str:
        if self.messages:
            return "\n\n".join(f"{m['role']}: {m['content']}" for m in self.messages)
        return self.text


class ComparisonStatus(models.TextChoices):
    OPEN = "open", "Needs judgments"
    COMPLETE = "complete", "Complete"
    RETIRED = "retired", "Retired"


def normalized_answer(text: str) -> str:
    """An answer's text with its whitespace runs made single spaces: two answers equal under this are one answer."""
    return " ".join(text.split())


def pair_digest(text_a: str, text_b: str) -> str:
    """The key of a pair's two answers, whichever side each is on and however their whitespace runs: a
    prompt never gets a second comparison of the same two answers (generation and preference imports
    skip a pair whose key the prompt has), and the check reads keys, not every earlier pair's texts."""
    a, b = sorted(normalized_answer(text) for text in (text_a, text_b))
    return hashlib.sha256(f"{len(a)}:{a}{b}".encode()).hexdigest()[:32]


class Comparison(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    completion_a = models.ForeignKey("generation.Completion", on_delete=models.PROTECT, related_name="+")
    completion_b = models.ForeignKey("generation.Completion", on_delete=models.PROTECT, related_name="+")
    is_gold = models.BooleanField(default=False)
    gold_choice = models.CharField(max_length=10, choices=Choice.choices, blank=True)
    judgments_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=ComparisonStatus.choices, default=ComparisonStatus.OPEN)
    priority = models.IntegerField(
        default=0,
        help_text="The prompt's priority, copied here so the work queue sorts on one indexed table "
        "(labeling.services.prompts_set_priority keeps both in step).",
    )
    # Active selection (labeling.selection): within one priority, picked pairs are served first, by rank.
    selection_rank = models.IntegerField(
        default=0,
        help_text="Above 0: picked for a batch of human work, served highest first (a batch's most informative "
        "pair first; a top-up's picks before what is left of earlier batches); 0: not picked.",
    )
    selected_by = models.CharField(
        max_length=12, blank=True, help_text="uncertainty, certainty or random: why the batch picked it (empty: never picked)."
    )
    policy_margin = models.FloatField(
        null=True,
        blank=True,
        help_text="The policy's implicit reward margin, beta * (log-ratio of a - log-ratio of b) against its "
        "reference, when the pair was scored; near 0: the policy cannot tell the two apart.",
    )
    policy_entropy = models.FloatField(
        null=True,
        blank=True,
        help_text="The policy's predictive entropy at the prompt when the pair was scored, in nats: "
        "-(log pi(a|x) + log pi(b|x)) / 2; high: the policy is unsure how to answer the prompt.",
    )
    texts_digest = models.CharField(
        max_length=32, editable=False, help_text="pair_digest of the two answers' texts (set on save when empty)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~Q(completion_a=models.F("completion_b")), name="comparison_distinct_sides"),
            models.UniqueConstraint(fields=["completion_a", "completion_b"], name="comparison_unique_pair"),
            models.CheckConstraint(
                condition=Q(is_gold=False, gold_choice="") | Q(is_gold=True, gold_choice__in=Choice.values),
                name="comparison_gold_has_answer",
            ),
            models.CheckConstraint(condition=Q(status__in=ComparisonStatus.values), name="comparison_status_valid"),
        ]
        indexes = [
            models.Index(fields=["status", "is_gold"]),
            # The work queue: a claim walks open regular pairs in serving order and
            # stops at the first free one; completed pairs leave the index. The table's
            # fillfactor (migration 0010) keeps most judgment count updates off this index.
            models.Index(
                models.F("priority").desc(),
                models.F("selection_rank").desc(),
                "id",
                name="comparison_queue",
                condition=Q(status="open", is_gold=False),
            ),
        ]

    def __str__(self) -> str:
        return f"Comparison {self.pk}"

    def save(self, *args, **kwargs) -> None:
        # The bulk writers (labeling.services.comparisons_create and _judged) pass the digest in their rows.
        if not self.texts_digest:
            self.texts_digest = pair_digest(self.completion_a.text, self.completion_b.text)
        super().save(*args, **kwargs)


class AssignmentState(models.TextChoices):
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    left_is_a = models.BooleanField(help_text="Completion a was shown on the left.")
    leased_until = models.DateTimeField()
    state = models.CharField(max_length=10, choices=AssignmentState.choices, default=AssignmentState.LEASED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # An annotator never sees a pair twice, whatever happened to the first lease.
            models.UniqueConstraint(fields=["comparison", "annotator"], name="assignment_once_per_annotator"),
            models.CheckConstraint(condition=Q(state__in=AssignmentState.values), name="assignment_state_valid"),
        ]
        # Live leases, looked up per pair (the queue's cap, read for every pair a claim looks at) and per
        # annotator (their held lease). Each index holds leased rows only, so a lookup reads that pair's
        # or annotator's own few leases, with the annotator's bounded to the last lease period by
        # leased_until: an index on (state, leased_until) served both by reading every lease of the
        # last lease period campaign-wide, and one on (annotator, state) every lease the annotator ever
        # took until vacuum removed them (a lease's entry stays behind when it is submitted).
        indexes = [
            models.Index(fields=["comparison"], condition=Q(state="leased"), name="assignment_pair_lease"),
            models.Index(fields=["annotator", "leased_until"], condition=Q(state="leased"), name="assignment_annotator_lease"),
        ]

    def __str__(self) -> str:
        return f"Assignment {self.pk} ({self.state})"


# Scripted annotators are users in this group: every judgment they submit is stored as simulated.
SIMULATED_GROUP = "simulated annotators"


class JudgmentSource(models.TextChoices):
    """Where a judgment came from. Training, dashboards and gates see human judgments unless a caller asks."""

    HUMAN = "human", "Human"
    SIMULATED = "simulated", "Simulated (a scripted annotator)"
    IMPORTED = "imported", "Imported (an existing preference data set)"


class Judgment(models.Model):
    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judgments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judgments")
    choice = models.CharField(max_length=10, choices=Choice.choices)
    strength = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 slightly, 2 clearly, 3 much.")
    rationale = models.TextField(blank=True)
    left_is_a = models.BooleanField(help_text="Order shown: completion a was on the left.")
    time_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time on task.")
    source = models.CharField(max_length=10, choices=JudgmentSource.choices, default=JudgmentSource.HUMAN)
    created_at = models.DateTimeField(auto_now_add=True)
    reopened_until = models.DateTimeField(
        null=True, blank=True, help_text="Undone by its annotator: a new answer until then revises it."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="judgment_once_per_annotator"),
            models.CheckConstraint(condition=Q(source__in=JudgmentSource.values), name="judgment_source_valid"),
            models.CheckConstraint(condition=Q(choice__in=Choice.values), name="judgment_choice_valid"),
            models.CheckConstraint(
                condition=Q(strength__isnull=True) | Q(strength__gte=1, strength__lte=3), name="judgment_strength_1_3"
            ),
        ]
        indexes = [models.Index(fields=["annotator", "created_at"])]

    def __str__(self) -> str:
        return f"Judgment {self.pk}: {self.choice}"


class JudgmentRevision(models.Model):
    """An answer a judgment had before its annotator undid it and answered again (the judgment keeps the new one)."""

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="revisions")
    choice = models.CharField(max_length=10, choices=Choice.choices)
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    time_ms = models.PositiveIntegerField(null=True, blank=True)
    answered_at = models.DateTimeField(help_text="When this (old) answer was given.")
    revised_at = models.DateTimeField(help_text="When it was replaced.")

    class Meta:
        ordering = ["judgment", "revised_at"]

    def __str__(self) -> str:
        return f"Revision of judgment {self.judgment_id}: was {self.choice}"


class FlagReason(models.TextChoices):
    UNSAFE = "unsafe", "Unsafe content"
    BROKEN = "broken", "Broken output"
    UNCLEAR = "unclear", "Prompt unclear"


class Flag(models.Model):
    """An annotator's report that a pair should not be judged as it is; an admin resolves it."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="flags")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labeling_flags")
    reason = models.CharField(max_length=10, choices=FlagReason.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="flag_once_per_annotator"),
            models.CheckConstraint(condition=Q(reason__in=FlagReason.values), name="flag_reason_valid"),
        ]
        indexes = [models.Index(fields=["resolved_at"])]

    def __str__(self) -> str:
        return f"Flag {self.pk}: {self.reason}"

from django.conf import settings
from django.db import models
from django.db.models import Q


class PreferenceSnapshot(models.Model):
    """An exported, immutable preference dataset: what a round trained on."""

    campaign = models.ForeignKey("labeling.Campaign", on_delete=models.CASCADE, related_name="snapshots")
    split = models.CharField(max_length=10, default="train")
    filters = models.JSONField(default=dict, help_text="Aggregation policy and filters used.")
    row_count = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    jsonl_path = models.CharField(max_length=500, blank=True)
    parquet_path = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Snapshot {self.pk} ({self.row_count} rows)"


class RoundStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Training"
    EVALUATING = "evaluating", "Evaluating"
    PROMOTED = "promoted", "Promoted"
    GATED = "gated", "Gated out"
    # Finished, but too few held-out pairs to decide on: never promoted automatically.
    NOT_EVALUATED = "unevaluated", "Not evaluated"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_ROUND_STATES = (RoundStatus.QUEUED, RoundStatus.RUNNING, RoundStatus.EVALUATING)


class TrainingRound(models.Model):
    campaign = models.ForeignKey("labeling.Campaign", on_delete=models.CASCADE, related_name="training_rounds")
    number = models.PositiveIntegerField()
    snapshot = models.ForeignKey(PreferenceSnapshot, null=True, blank=True, on_delete=models.PROTECT)
    heldout_snapshot = models.ForeignKey(
        PreferenceSnapshot, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reference_version = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="+")
    start_version = models.ForeignKey(
        "generation.ModelVersion",
        null=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The policy training starts from: the campaign's active policy when the round was started.",
    )
    output_version = models.OneToOneField(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="produced_by"
    )
    config = models.JSONField(default=dict, help_text="beta, learning_rate, epochs, batch_size, loss_type, LoRA...")
    status = models.CharField(max_length=12, choices=RoundStatus.choices, default=RoundStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    eval_results = models.JSONField(default=dict, blank=True)
    evidence = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the round stands on (training.selectors.round_evidence): at \"start\" and at \"export\".",
    )
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "number"], name="round_number_unique_per_campaign"),
            # Two schedulers firing at once still start one round.
            models.UniqueConstraint(
                fields=["campaign"],
                condition=Q(status__in=ACTIVE_ROUND_STATES),
                name="round_one_active_per_campaign",
            ),
            models.CheckConstraint(condition=Q(status__in=RoundStatus.values), name="round_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign} round {self.number} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_ROUND_STATES


class RoundMetric(models.Model):
    """One logged step of a round's training curve, streamed by a trainer callback."""

    round = models.ForeignKey(TrainingRound, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    epoch = models.FloatField(null=True, blank=True)
    values = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["round", "step"]
        constraints = [models.UniqueConstraint(fields=["round", "step"], name="metric_unique_step")]

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersionStatus(models.TextChoices):
    READY = "ready", "Ready"
    RETIRED = "retired", "Retired"


class ModelVersion(models.Model):
    """A servable policy: a base checkpoint, optionally with a LoRA adapter on top.

    The round that produced a version is its reverse relation `produced_by`
    (training.TrainingRound.output_version): generation knows nothing of training.
    """

    name = models.CharField(max_length=200, unique=True)
    base_path = models.CharField(max_length=500, help_text="Hugging Face checkpoint directory or hub id.")
    adapter_path = models.CharField(max_length=500, blank=True, help_text="PEFT LoRA adapter directory.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    status = models.CharField(max_length=10, choices=ModelVersionStatus.choices, default=ModelVersionStatus.READY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class GenerationJob(models.Model):
    campaign = models.ForeignKey("labeling.Campaign", on_delete=models.CASCADE, related_name="generation_jobs")
    policy = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="jobs")
    policy_b = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="jobs_as_b",
        help_text="Set for A/B jobs: side b is sampled from this policy.",
    )
    temperature = models.FloatField(default=1.0)
    top_p = models.FloatField(default=1.0)
    max_tokens = models.PositiveIntegerField(default=128)
    seed = models.BigIntegerField(default=0)
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="At most this many prompts.")
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    skipped_identical = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="The Celery worker that last ran it.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(temperature__gte=0), name="job_temperature_non_negative"),
            models.CheckConstraint(condition=Q(top_p__gt=0) & Q(top_p__lte=1), name="job_top_p_0_1"),
            models.CheckConstraint(condition=Q(max_tokens__gte=1), name="job_max_tokens_positive"),
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="job_status_valid"),
        ]

    def __str__(self) -> str:
        return f"Generation job {self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def sampling_params(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


class Completion(models.Model):
    prompt = models.ForeignKey("labeling.Prompt", on_delete=models.CASCADE, related_name="completions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="completions")
    job = models.ForeignKey(GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="completions")
    text = models.TextField()
    token_ids = models.JSONField(default=list)
    cumulative_logprob = models.FloatField(null=True, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    sampling_params = models.JSONField(default=dict)
    seed = models.BigIntegerField(null=True, blank=True)
    backend = models.CharField(max_length=20)
    is_heldout = models.BooleanField(default=False, help_text="Sampled for a held-out prompt: never trained on.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["prompt", "model_version"])]

    def __str__(self) -> str:
        return f"Completion {self.pk}"

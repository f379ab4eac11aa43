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

    def context_length(self) -> int:
        from generation.backends import context_length  # lazily: loading models never imports transformers

        return context_length(self.base_path)

    def prompts_over_context(self, prompts: list) -> list[tuple[int, int]]:
        """(index, tokens) of the prompts (anything with `text` and `messages`) this policy cannot sample:
        no room left in its context. Labeling asks this through its campaign's policy when it imports a file."""
        from generation.backends import prompt_lengths
        from generation.selectors import prompt_model_input

        lengths = prompt_lengths([prompt_model_input(p) for p in prompts], base_path=self.base_path)
        limit = self.context_length()
        return [(i, n) for i, n in enumerate(lengths) if n >= limit]


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class JobPhase(models.TextChoices):
    QUEUED = "queued", "Queued"
    LOADING = "loading", "Loading the model"
    SAMPLING = "sampling", "Sampling"
    STORING = "storing", "Storing"


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
    only_missing = models.BooleanField(
        default=True, help_text="Sample only prompts with no open or settled pair from the same policy (or A/B pair)."
    )
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    phase = models.CharField(max_length=10, choices=JobPhase.choices, default=JobPhase.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0, help_text="Prompts finished: paired, or skipped for a reason.")
    skipped_identical = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="Prompts that could not be sampled (see the skips).")
    duplicates = models.PositiveIntegerField(default=0, help_text="Pairs equal to an existing pair of their prompt.")
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
            models.CheckConstraint(condition=Q(phase__in=JobPhase.values), name="job_phase_valid"),
        ]

    def __str__(self) -> str:
        return f"Generation job {self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def error_summary(self) -> str:
        """The error's last line (an exception's type and message): the traceback above it is folded away."""
        lines = [line for line in self.error.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    @property
    def sampling_params(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


class ShardStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class GenerationShard(models.Model):
    """A slice of a job's prompts that one generation worker takes at a time.

    The prompts are fixed when the job is created, so any worker can run (or
    resume) a shard on its own. `attempt` grows with every claim: a worker whose
    shard was claimed again (requeued after its host was presumed dead) stores nothing more.
    """

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="shards")
    number = models.PositiveIntegerField()
    prompt_ids = models.JSONField(default=list)
    status = models.CharField(max_length=10, choices=ShardStatus.choices, default=ShardStatus.QUEUED)
    attempt = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    sampled = models.PositiveIntegerField(default=0, help_text="Prompts whose samples finished, stored or not yet.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="shard_unique_number_per_job"),
            models.CheckConstraint(condition=Q(status__in=ShardStatus.values), name="shard_status_valid"),
        ]

    def __str__(self) -> str:
        return f"Shard {self.number} of job {self.job_id} ({self.status})"


class GenerationSkip(models.Model):
    """A prompt a job could not sample (too long for the policy's context, refused by the engine)."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="skips")
    prompt = models.ForeignKey("labeling.Prompt", on_delete=models.CASCADE, related_name="generation_skips")
    reason = models.CharField(max_length=500, help_text="One line, shown on the job page.")
    detail = models.TextField(blank=True, help_text="The engine's own message or traceback, if any.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["job", "prompt"], name="skip_unique_prompt_per_job")]

    def __str__(self) -> str:
        return f"Prompt {self.prompt_id} skipped by job {self.job_id}"


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

import hashlib
import math
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from generation import selectors, tasks
from generation.backends import Generator, Sample, SamplingConfig, get_generator
from generation.models import Completion, GenerationJob, JobStatus, ModelVersion, ModelVersionStatus
from labeling import services as labeling_services
from labeling.models import Campaign, Prompt, Split

FINISHED_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def model_version_register(
    *, name: str, base_path: str, adapter_path: str = "", parent: ModelVersion | None = None
) -> ModelVersion:
    """Register a servable policy (idempotent by name: the same name returns the same row)."""
    version, _ = ModelVersion.objects.get_or_create(
        name=name, defaults={"base_path": base_path, "adapter_path": adapter_path, "parent": parent}
    )
    return version


@transaction.atomic
def campaign_ensure_policy(*, campaign: Campaign, base_path: str) -> ModelVersion:
    """The campaign's active policy; if it has none, `base_path`'s version (registered if need be) becomes it.

    A checkpoint registered under its own name (make_real_model's "smollm2") is reused, not registered twice.
    """
    if campaign.active_policy_id:
        return campaign.active_policy
    version = ModelVersion.objects.filter(
        base_path=base_path, adapter_path="", status=ModelVersionStatus.READY
    ).order_by("created_at").first() or model_version_register(name=f"base:{base_path}", base_path=base_path)
    labeling_services.campaign_set_active_policy(campaign=campaign, policy_id=version.pk)
    return version


def generation_job_create(
    *,
    campaign: Campaign,
    policy: ModelVersion,
    policy_b: ModelVersion | None = None,
    limit: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 128,
    created_by: User | None = None,
) -> GenerationJob:
    """A queued job that nothing runs yet (generation_job_start enqueues; `generate_pairs --wait` runs it here)."""
    if policy_b is not None and policy_b.pk == policy.pk:
        raise ValidationError({"policy_b": "An A/B job needs two different policies."})
    if policy_b is None and temperature == 0:
        raise ValidationError(
            {"temperature": "Greedy sampling gives one policy's two samples identical: use a temperature above 0."}
        )
    job = GenerationJob(
        campaign=campaign,
        policy=policy,
        policy_b=policy_b,
        limit=limit,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        created_by=created_by,
    )
    job.full_clean()
    job.save()
    return job


def _enqueue(job: GenerationJob) -> None:
    # After commit: a worker that picks the message up at once must find the job row.
    transaction.on_commit(lambda: tasks.generation_job_run_task.delay(job.pk))


@transaction.atomic
def generation_job_start(**options: Any) -> GenerationJob:
    """generation_job_create (the same keyword arguments), then the job goes on the `generation` queue
    once the transaction commits."""
    job = generation_job_create(**options)
    _enqueue(job)
    return job


@transaction.atomic
def generation_job_resume(*, job: GenerationJob) -> bool:
    """Queue a failed job, or one whose worker died while running it, again.

    The new run samples only the prompts the job still lacks. Returns False when
    the job had already finished (succeeded or cancelled).
    """
    resumed = GenerationJob.objects.filter(
        pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.RUNNING, JobStatus.QUEUED]
    ).update(status=JobStatus.QUEUED, error="", finished_at=None)
    if resumed:
        _enqueue(job)
    return bool(resumed)


def generation_jobs_recover(*, worker: str) -> int:
    """Requeue the jobs a worker of this name was running when it died; call it when that worker starts again.

    A worker name (`-n generation@host`) runs one job at a time, so a job still
    "running" under the name of a worker that is only now starting was orphaned
    by its crash. (The broker would redeliver the unacknowledged message too, but
    only after its visibility timeout: an hour on Redis.) Returns how many were requeued.
    """
    orphans = GenerationJob.objects.filter(status=JobStatus.RUNNING, worker=worker)
    return sum(generation_job_resume(job=job) for job in orphans)


def generation_job_cancel(*, job: GenerationJob) -> bool:
    """Stop a queued or running job; a running one stops before it stores its next chunk."""
    return bool(
        GenerationJob.objects.filter(pk=job.pk, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
            status=JobStatus.CANCELLED, finished_at=timezone.now()
        )
    )


def _normalized(text: str) -> str:
    return " ".join(text.split())


def prompt_seed(*, job_seed: int, prompt: Prompt, attempt: int) -> int:
    """The seed for one prompt's samples in a job: its first sample uses it, its second the next integer.

    Derived from the prompt's content hash, not its row id, so the same job seed
    gives the same samples in any database.
    """
    digest = hashlib.sha256(f"{job_seed}:{prompt.content_hash}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits: every engine's seed type holds it


@dataclass
class _Side:
    sample: Sample
    policy: ModelVersion
    seed: int


@dataclass
class _Pair:
    prompt: Prompt
    a: _Side
    b: _Side

    @property
    def identical(self) -> bool:
        return _normalized(self.a.sample.text) == _normalized(self.b.sample.text)


@dataclass
class _Draw:
    """One chunk's samples, queued in the engine: one batch per policy."""

    prompts: list[Prompt]
    seeds: list[int]
    batches: list[object]


def _draw_start(*, job: GenerationJob, prompts: list[Prompt], generator: Generator, attempt: int) -> _Draw:
    params = SamplingConfig(temperature=job.temperature, top_p=job.top_p, max_tokens=job.max_tokens)
    inputs = [selectors.prompt_model_input(p) for p in prompts]
    seeds = [prompt_seed(job_seed=job.seed, prompt=p, attempt=attempt) for p in prompts]
    if job.policy_b is None:
        batches = [generator.submit(inputs, policy=job.policy, params=params, n=2, seeds=seeds)]
    else:
        # Side b's seed is side a's plus one, as for the second of two samples from one policy.
        seeds_b = [seed + 1 for seed in seeds]
        batches = [
            generator.submit(inputs, policy=job.policy, params=params, n=1, seeds=seeds),
            generator.submit(inputs, policy=job.policy_b, params=params, n=1, seeds=seeds_b),
        ]
    return _Draw(prompts=prompts, seeds=seeds, batches=batches)


def _draw_finish(*, job: GenerationJob, draw: _Draw, generator: Generator) -> list[_Pair]:
    if job.policy_b is None:
        samples = generator.collect(draw.batches[0])
        sides_a, sides_b = [s[0] for s in samples], [s[1] for s in samples]
    else:
        sides_a, sides_b = ([s[0] for s in generator.collect(b)] for b in draw.batches)
    policy_b = job.policy_b or job.policy
    return [
        _Pair(prompt=prompt, a=_Side(a, job.policy, seed), b=_Side(b, policy_b, seed + 1))
        for prompt, a, b, seed in zip(draw.prompts, sides_a, sides_b, draw.seeds)
    ]


def _draw_discard(*, draw: _Draw, generator: Generator) -> None:
    for batch in draw.batches:
        generator.discard(batch)


def _sample_pairs(*, job: GenerationJob, draw: _Draw, generator: Generator) -> list[_Pair]:
    """The chunk's pairs; a pair whose two texts match is drawn once more with fresh seeds."""
    pairs = _draw_finish(job=job, draw=draw, generator=generator)
    again = [i for i, pair in enumerate(pairs) if pair.identical]
    if again:
        redraw = _draw_start(job=job, prompts=[pairs[i].prompt for i in again], generator=generator, attempt=1)
        for i, pair in zip(again, _draw_finish(job=job, draw=redraw, generator=generator)):
            pairs[i] = pair
    return pairs


def _completion(*, job: GenerationJob, prompt: Prompt, side: _Side, backend: str) -> Completion:
    return Completion(
        prompt=prompt,
        model_version=side.policy,
        job=job,
        # Byte-level tokenizers can emit a NUL byte, which PostgreSQL text refuses;
        # token_ids keep the exact output.
        text=side.sample.text.replace("\x00", "\ufffd"),
        token_ids=side.sample.token_ids,
        cumulative_logprob=side.sample.cumulative_logprob,
        finish_reason=side.sample.finish_reason,
        sampling_params=job.sampling_params,
        seed=side.seed,
        backend=backend,
        is_heldout=prompt.split == Split.HELDOUT,
    )


def _store_chunk(*, job: GenerationJob, pairs: list[_Pair], backend: str) -> bool:
    """Write a chunk's completions, comparisons and progress in one transaction; False if the job was stopped."""
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.RUNNING:
            return False
        # A second run of this job (a message redelivered while the first still
        # runs, or an admin's resume) may have stored some of these prompts already.
        stored = set(
            Completion.objects.filter(job=job, prompt__in=[pair.prompt for pair in pairs]).values_list(
                "prompt_id", flat=True
            )
        )
        fresh = [pair for pair in pairs if pair.prompt.pk not in stored]
        # Identical pairs keep their completions (so the job knows the prompt is
        # done) but get no comparison.
        completions = Completion.objects.bulk_create(
            _completion(job=job, prompt=pair.prompt, side=side, backend=backend)
            for pair in fresh
            for side in (pair.a, pair.b)
        )
        labeling_services.comparisons_create(
            rows=[
                (pair.prompt.pk, completions[2 * i].pk, completions[2 * i + 1].pk)
                for i, pair in enumerate(fresh)
                if not pair.identical
            ]
        )
        locked.done += len(fresh)
        locked.skipped_identical += sum(pair.identical for pair in fresh)
        locked.save(update_fields=["done", "skipped_identical"])
    job.done, job.skipped_identical = locked.done, locked.skipped_identical
    return True


def generation_job_run(
    *, job: GenerationJob, on_progress: Callable[[GenerationJob], None] | None = None, worker: str = ""
) -> GenerationJob:
    """Sample pairs for every prompt the job still lacks, chunk by chunk; the Celery task calls this.

    Idempotent and resumable: a finished job is left alone, and a job left
    running by a dead worker goes on with the prompts that have no completions
    from it yet. Slow work (the engine) runs outside any transaction; each
    chunk's rows are written in one. `on_progress` is called with the job after
    each stored chunk.
    """
    claimed = GenerationJob.objects.filter(pk=job.pk, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
        status=JobStatus.RUNNING, started_at=Coalesce("started_at", Now()), finished_at=None, error="", worker=worker
    )
    job = GenerationJob.objects.select_related("campaign", "policy", "policy_b").get(pk=job.pk)
    if not claimed:
        return job
    draws: deque[_Draw] = deque()
    try:
        todo = list(selectors.job_prompts_todo(job=job))
        job.total = job.done + len(todo)
        job.save(update_fields=["total"])
        if on_progress:
            on_progress(job)
        generator = get_generator()
        size = settings.GENERATION_CHUNK_SIZE
        chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
        # Chunks queued behind the one being stored, about twice as many samples
        # as the engine runs at once: it keeps sampling them while the oldest
        # chunk waits for its longest sample. On the tiny model, sampling chunk
        # by chunk cost ~20% of raw vLLM throughput, one chunk ahead ~10%.
        ahead = math.ceil(generator.capacity(job.policy) / size) if chunks else 0
        for number in range(len(chunks)):
            while len(draws) <= ahead and number + len(draws) < len(chunks):
                draws.append(
                    _draw_start(job=job, prompts=chunks[number + len(draws)], generator=generator, attempt=0)
                )
            pairs = _sample_pairs(job=job, draw=draws[0], generator=generator)
            draws.popleft()
            if not _store_chunk(job=job, pairs=pairs, backend=generator.name):
                job.refresh_from_db()
                return job
            if on_progress:
                on_progress(job)
    except Exception:
        GenerationJob.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED, error=traceback.format_exc(limit=-8), finished_at=timezone.now()
        )
        raise
    finally:
        # A stopped or failed job leaves queued chunks behind: the engine serves the next job.
        for draw in draws:
            _draw_discard(draw=draw, generator=generator)
    GenerationJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job

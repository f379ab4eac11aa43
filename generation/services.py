import functools
import hashlib
import io
import math
import os
import secrets
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from generation import selectors, store_process, tasks
from generation.backends import Generator, OnFinished, Rejection, Sample, SamplingConfig, Stopped, get_generator
from generation.models import (
    Completion,
    GenerationJob,
    GenerationShard,
    GenerationSkip,
    JobPhase,
    JobStatus,
    ModelVersion,
    ModelVersionStatus,
    ShardStatus,
)
from labeling import bulk, importers
from labeling import services as labeling_services
from labeling.models import Campaign, Choice, PairSelection, Prompt, Split, normalized_answer, pair_digest

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
def campaign_policy_next(*, campaign: Campaign) -> ModelVersion:
    """Which policy samples next for the campaign (the one rule every caller asks): its active policy, or
    settings.POLICY_MODEL's version as its first one when it has none.

    A checkpoint registered under its own name (make_real_model's "smollm2") is reused, not registered twice.
    """
    if campaign.active_policy_id:
        return campaign.active_policy
    base_path = settings.POLICY_MODEL
    version = ModelVersion.objects.filter(
        base_path=base_path, adapter_path="", status=ModelVersionStatus.READY
    ).order_by("created_at").first() or model_version_register(name=f"base:{base_path}", base_path=base_path)
    labeling_services.campaign_set_active_policy(campaign=campaign, policy_id=version.pk)
    return version


@transaction.atomic
def generation_job_create(
    *,
    campaign: Campaign,
    policy: ModelVersion,
    policy_b: ModelVersion | None = None,
    limit: int | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 128,
    only_missing: bool = True,
    split: str | None = None,
    created_by: User | None = None,
) -> GenerationJob:
    """A queued job that nothing runs yet (generation_job_start enqueues; `generate_pairs --wait` runs it here).

    Its prompts are chosen now (selectors.prompts_to_sample) and split into
    shards of GENERATION_SHARD_SIZE that any generation worker may take. With no
    seed, the job draws a fresh one (recorded), so a forced resample never
    repeats an earlier job's texts. A job with nothing to sample has succeeded at once.
    """
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
        seed=secrets.randbelow(2**31) if seed is None else seed,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        only_missing=only_missing,
        created_by=created_by,
    )
    job.full_clean()
    prompt_ids = list(
        selectors.prompts_to_sample(
            campaign=campaign, policy=policy, policy_b=policy_b, only_missing=only_missing, limit=limit, split=split
        ).values_list("id", flat=True)
    )
    job.total = len(prompt_ids)
    if not prompt_ids:
        job.status, job.started_at, job.finished_at = JobStatus.SUCCEEDED, timezone.now(), timezone.now()
    job.save()
    size = settings.GENERATION_SHARD_SIZE
    GenerationShard.objects.bulk_create(
        GenerationShard(job=job, number=number, prompt_ids=prompt_ids[start : start + size])
        for number, start in enumerate(range(0, len(prompt_ids), size))
    )
    return job


def _enqueue(shard_ids: list[int]) -> None:
    # After commit: a worker that picks a message up at once must find the shard row.
    # One message per shard, so N workers on the queue share the job.
    transaction.on_commit(lambda: [tasks.generation_shard_run_task.delay(pk) for pk in shard_ids])


@transaction.atomic
def generation_job_start(**options: Any) -> GenerationJob:
    """generation_job_create (the same keyword arguments), then its shards go on the `generation` queue
    once the transaction commits."""
    job = generation_job_create(**options)
    _enqueue(list(job.shards.values_list("pk", flat=True)))
    return job


@transaction.atomic
def generation_job_resume(*, job: GenerationJob) -> bool:
    """Queue a failed job, or one whose worker died while running it, again.

    Its unfinished shards are queued again; each samples only the prompts it
    still lacks. A shard still running on a live worker is taken from it: that
    worker stores nothing more. Returns False when the job had already finished
    (succeeded or cancelled).
    """
    # Shards before the job: the order in which workers lock them (no deadlock).
    shards = list(
        GenerationShard.objects.select_for_update().filter(job=job).exclude(status=ShardStatus.DONE).order_by("number")
    )
    resumed = GenerationJob.objects.filter(
        pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.RUNNING, JobStatus.QUEUED]
    ).update(status=JobStatus.QUEUED, phase=JobPhase.QUEUED, error="", finished_at=None)
    if not resumed:
        return False
    GenerationShard.objects.filter(pk__in=[s.pk for s in shards]).update(status=ShardStatus.QUEUED, worker="")
    _enqueue([s.pk for s in shards])
    return True


@transaction.atomic
def generation_jobs_recover(*, worker: str) -> int:
    """Requeue the shards a worker of this name was running when it died; call it when that worker starts again.

    A worker name (`-n generation@host`) runs one shard at a time, so a shard
    still "running" under the name of a worker that is only now starting was
    orphaned by its crash. (The broker would redeliver the unacknowledged message
    too, but only after its visibility timeout: an hour on Redis.) Returns how many were requeued.
    """
    orphans = list(
        GenerationShard.objects.select_for_update()
        .filter(status=ShardStatus.RUNNING, worker=worker, job__status=JobStatus.RUNNING)
        .values_list("pk", flat=True)
    )
    GenerationShard.objects.filter(pk__in=orphans).update(status=ShardStatus.QUEUED, worker="")
    _enqueue(orphans)
    return len(orphans)


def generation_job_cancel(*, job: GenerationJob) -> bool:
    """Stop a queued or running job; a running shard stops before it stores its next chunk."""
    return bool(
        GenerationJob.objects.filter(pk=job.pk, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
            status=JobStatus.CANCELLED, finished_at=timezone.now()
        )
    )


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

    @functools.cached_property
    def identical(self) -> bool:
        return normalized_answer(self.a.sample.text) == normalized_answer(self.b.sample.text)


@dataclass
class _Skip:
    prompt: Prompt
    rejection: Rejection


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
    truncate = job.campaign.truncate_long_prompts
    if job.policy_b is None:
        batches = [generator.submit(inputs, policy=job.policy, params=params, n=2, seeds=seeds, truncate=truncate)]
    else:
        # Side b's seed is side a's plus one, as for the second of two samples from one policy.
        seeds_b = [seed + 1 for seed in seeds]
        batches = [
            generator.submit(inputs, policy=job.policy, params=params, n=1, seeds=seeds, truncate=truncate),
            generator.submit(inputs, policy=job.policy_b, params=params, n=1, seeds=seeds_b, truncate=truncate),
        ]
    return _Draw(prompts=prompts, seeds=seeds, batches=batches)


def _draw_finish(
    *, job: GenerationJob, draw: _Draw, generator: Generator, on_finished: OnFinished, stop: Callable[[], bool] | None
) -> list[_Pair | _Skip]:
    results = [generator.collect(batch, on_finished=on_finished, stop=stop) for batch in draw.batches]
    policy_b = job.policy_b or job.policy
    drawn: list[_Pair | _Skip] = []
    for index, (prompt, seed) in enumerate(zip(draw.prompts, draw.seeds)):
        sides = [result[index] for result in results]
        rejected = next((side for side in sides if isinstance(side, Rejection)), None)
        if rejected is not None:
            drawn.append(_Skip(prompt=prompt, rejection=rejected))
            continue
        a, b = (sides[0][0], sides[0][1]) if job.policy_b is None else (sides[0][0], sides[1][0])
        drawn.append(_Pair(prompt=prompt, a=_Side(a, job.policy, seed), b=_Side(b, policy_b, seed + 1)))
    return drawn


def _draw_discard(*, draw: _Draw, generator: Generator) -> None:
    for batch in draw.batches:
        generator.discard(batch)


def _sample_pairs(
    *, job: GenerationJob, draw: _Draw, generator: Generator, progress: "_Progress", stop: Callable[[], bool] | None
) -> list[_Pair | _Skip]:
    """The chunk's pairs and skips; a pair whose two texts match is drawn once more with fresh seeds.

    Raises Stopped when `stop` says yes between engine steps (the redraw, if any, is discarded; `draw` is the
    caller's)."""
    finish = {"job": job, "generator": generator, "on_finished": progress.finished, "stop": stop}
    drawn = _draw_finish(draw=draw, **finish)
    again = [i for i, pair in enumerate(drawn) if isinstance(pair, _Pair) and pair.identical]
    if again:
        redraw = _draw_start(job=job, prompts=[drawn[i].prompt for i in again], generator=generator, attempt=1)
        try:
            redrawn = _draw_finish(draw=redraw, **finish)
        except Stopped:
            _draw_discard(draw=redraw, generator=generator)
            raise
        for i, pair in zip(again, redrawn):
            drawn[i] = pair
    progress.consumed(sum(isinstance(d, _Pair) for d in drawn) + len(again))
    return drawn


def _stored_text(sample: Sample) -> str:
    # Byte-level tokenizers can emit a NUL byte, which PostgreSQL text refuses;
    # token_ids keep the exact output.
    return sample.text.replace("\x00", "\ufffd")


_COMPLETION_COLUMNS = (
    "prompt", "model_version", "job", "text", "token_ids", "cumulative_logprob", "finish_reason",
    "sampling_params", "seed", "backend", "is_heldout",
)  # fmt: skip


def _completion_row(*, job: GenerationJob, prompt: Prompt, side: _Side, backend: str, sampling_params: object) -> tuple:
    """A completion's values in _COMPLETION_COLUMNS' order, for bulk.insert."""
    sample = side.sample
    return (
        prompt.pk, side.policy.pk, job.pk, _stored_text(sample), bulk.json_value(sample.token_ids),
        sample.cumulative_logprob, sample.finish_reason, sampling_params, side.seed, backend,
        prompt.split == Split.HELDOUT,
    )  # fmt: skip


_STORED_COUNTS = ("done", "skipped_identical", "skipped", "duplicates")


def _store_chunk(
    *, job: GenerationJob, shard: GenerationShard, drawn: list[_Pair | _Skip], backend: str
) -> GenerationJob | None:
    """Write a chunk's completions, comparisons, skips and progress in one transaction; returns the job's
    row as stored (its counts), without touching `job`, which the sampling thread reads meanwhile.

    None, storing nothing, if the job was stopped or the shard was taken from this run.
    """
    with transaction.atomic():
        # Shard, then job: every writer locks them in this order.
        locked_shard = GenerationShard.objects.select_for_update().get(pk=shard.pk)
        if locked_shard.status != ShardStatus.RUNNING or locked_shard.attempt != shard.attempt:
            return None
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.RUNNING:
            return None
        prompt_ids = [d.prompt.pk for d in drawn]
        # A second run of this shard (a message redelivered while the first still
        # runs, or an admin's resume) may have stored some of these prompts already.
        stored = set(
            Completion.objects.filter(job=job, prompt_id__in=prompt_ids).values_list("prompt_id", flat=True)
        ) | set(GenerationSkip.objects.filter(job=job, prompt_id__in=prompt_ids).values_list("prompt_id", flat=True))
        fresh = [d for d in drawn if d.prompt.pk not in stored]
        pairs = [d for d in fresh if isinstance(d, _Pair)]
        skips = [d for d in fresh if isinstance(d, _Skip)]
        existing = selectors.comparison_digests(prompt_ids=[p.prompt.pk for p in pairs])
        # Identical and duplicate pairs keep their completions (so the job knows
        # the prompt is done) but get no comparison.
        sampling_params = bulk.json_value(job.sampling_params)
        completion_ids = bulk.insert(
            Completion,
            columns=_COMPLETION_COLUMNS,
            rows=[
                _completion_row(job=job, prompt=pair.prompt, side=side, backend=backend, sampling_params=sampling_params)
                for pair in pairs
                for side in (pair.a, pair.b)
            ],
        )
        rows, duplicates = [], 0
        for i, pair in enumerate(pairs):
            if pair.identical:
                continue
            digest = pair_digest(_stored_text(pair.a.sample), _stored_text(pair.b.sample))
            if (pair.prompt.pk, digest) in existing:
                duplicates += 1
                continue
            existing.add((pair.prompt.pk, digest))
            rows.append((pair.prompt.pk, completion_ids[2 * i], completion_ids[2 * i + 1], digest))
        labeling_services.comparisons_create(rows=rows)
        GenerationSkip.objects.bulk_create(
            GenerationSkip(job=job, prompt=skip.prompt, reason=skip.rejection.reason[:500], detail=skip.rejection.detail)
            for skip in skips
        )
        locked.done += len(fresh)
        locked.skipped_identical += sum(pair.identical for pair in pairs)
        locked.skipped += len(skips)
        locked.duplicates += duplicates
        locked.save(update_fields=list(_STORED_COUNTS))
    return locked


class _ChunkStore:
    """A shard's chunks stored one at a time, in order, each while the engine samples the next one.

    In autocommit (a worker, `generate_pairs`) a chunk is stored by the worker's
    storing process (generation.store_process), with its own database connection:
    the sampling thread keeps stepping the engine through the store's Python, its
    queries and its commit. Inside a caller's transaction (a test) the rows must
    join that transaction, and an in-memory SQLite database (the test suite's on
    SQLite) is this process's alone: there each chunk is stored inline.
    """

    def __init__(self, *, job: GenerationJob, shard: GenerationShard, backend: str, progress: "_Progress") -> None:
        self.job, self.shard, self.backend, self.progress = job, shard, backend, progress
        connection = transaction.get_connection()
        inline = connection.in_atomic_block or (connection.vendor == "sqlite" and connection.is_in_memory_db())
        self._database = None if inline else connection.settings_dict
        if self._database is not None:
            store_process.start(self._database)  # its set-up overlaps the engine's loading
        self._prompts = 0  # of the chunk being stored

    def __enter__(self) -> "_ChunkStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Left by an exception (a store is still running only then): that store ends before the run
        # marks the shard failed, and the exception being raised is the one reported. Then the
        # storing process closes its connection, which it keeps for one shard only.
        if self.progress.store is not None:
            self.progress.store.exception()
        if self._database is not None:
            store_process.submit(self._database, store_process.close_connections).result()

    def put(self, drawn: list[_Pair | _Skip]) -> None:
        """Start storing a chunk (after wait() for the one before)."""
        options = {"job": self.job, "shard": self.shard, "drawn": drawn, "backend": self.backend}
        if self._database is None:
            future: Future = Future()
            future.set_result(_store_chunk(**options))
        else:
            future = store_process.submit(self._database, _store_chunk, **options)
        self.progress.store, self._prompts = future, len(drawn)

    def wait(self) -> bool:
        """Wait for the chunk being stored, if any, and count it (the job's counts, progress); False if it
        stored nothing because the job was stopped or the shard taken from this run. A store that raised
        raises here."""
        future, self.progress.store = self.progress.store, None
        if future is None:
            return True
        stored = future.result()
        if stored is None:
            return False
        for name in _STORED_COUNTS:
            setattr(self.job, name, getattr(stored, name))
        self.progress.chunk_stored(self._prompts)
        return True


# How often a running shard writes its count of finished samples (a write per
# engine step would cost more than the samples).
SAMPLED_WRITE_INTERVAL_S = 1.0


class _Progress:
    """Counts a shard's prompts as their samples finish in the engine, ahead of the chunk's store."""

    def __init__(self, *, job: GenerationJob, shard: GenerationShard, stored: int, on_progress) -> None:
        self.job, self.shard, self.on_progress = job, shard, on_progress
        self.requests_per_prompt = 1 if job.policy_b is None else 2
        self.stored, self.pending = stored, 0
        self.written, self.written_at = -1, 0.0
        self.store: Future | None = None  # a chunk's store, from _ChunkStore.put until its wait

    @property
    def sampled(self) -> int:
        return min(len(self.shard.prompt_ids), self.stored + max(self.pending, 0) // self.requests_per_prompt)

    def finished(self, requests: int) -> None:
        self.pending += requests
        if time.monotonic() - self.written_at < SAMPLED_WRITE_INTERVAL_S:
            return
        # Not while a chunk is being stored: its transaction holds the shard's row, and this thread would wait.
        if not self.storing:
            self.write()

    @property
    def storing(self) -> bool:
        return self.store is not None and not self.store.done()

    def consumed(self, prompts: int) -> None:
        """A collected chunk's sampled prompts (and redraws) leave the count of samples waiting to be stored."""
        self.pending -= prompts * self.requests_per_prompt

    def chunk_stored(self, prompts: int) -> None:
        self.stored += prompts
        self.write(stored=True)

    def write(self, *, stored: bool = False) -> None:
        """Write the sampled count if it moved, and tell on_progress if it did or a chunk was `stored`."""
        self.written_at = time.monotonic()
        if self.sampled != self.written:
            self.written = self.sampled
            GenerationShard.objects.filter(pk=self.shard.pk, attempt=self.shard.attempt).update(sampled=self.written)
        elif not stored:
            return
        if self.on_progress:
            self.on_progress(self.job)


class _Phase:
    """The job's phase as this run last wrote it: written only when it changes."""

    def __init__(self, job: GenerationJob) -> None:
        self.job, self.current = job, None

    def __call__(self, phase: JobPhase) -> None:
        if phase != self.current:
            self.current = phase
            GenerationJob.objects.filter(pk=self.job.pk, status=JobStatus.RUNNING).update(phase=phase)


@transaction.atomic
def _shard_claim(*, worker: str, job: GenerationJob | None = None, shard_id: int | None = None) -> GenerationShard | None:
    """Take a shard to run: a queued one, or one this worker name was running when it died.

    SKIP LOCKED and the attempt counter: two workers racing for one shard never
    both get it, and a worker never waits on another's claim.
    """
    claimable = GenerationShard.objects.filter(
        Q(status=ShardStatus.QUEUED) | Q(status=ShardStatus.RUNNING, worker=worker),
        job__status__in=[JobStatus.QUEUED, JobStatus.RUNNING],
    )
    claimable = claimable.filter(pk=shard_id) if shard_id is not None else claimable.filter(job=job)
    shard = claimable.order_by("number").select_for_update(skip_locked=True, of=("self",)).first()
    if shard is None:
        return None
    shard.status, shard.worker, shard.attempt = ShardStatus.RUNNING, worker, shard.attempt + 1
    shard.started_at, shard.finished_at = timezone.now(), None
    shard.save(update_fields=["status", "worker", "attempt", "started_at", "finished_at"])
    GenerationJob.objects.filter(pk=shard.job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=Coalesce("started_at", Now())
    )
    GenerationJob.objects.filter(pk=shard.job_id).update(worker=worker)
    return shard


# Named, not imported: generation knows nothing of training, where scoring a pair against a policy's
# reference lives (training.tasks.pairs_select, routed to the `training` queue).
PAIRS_SELECT_TASK = "training.tasks.pairs_select"


def _selection_enqueue(*, campaign: Campaign) -> None:
    """After commit, ask for the campaign's next batch of human work to be picked among the new pairs, if its
    pair selection scores them (uncertainty, certainty); a random campaign's queue serves its pairs as they come."""
    if campaign.pair_selection == PairSelection.RANDOM:
        return
    # A signature by name still runs the registered task's own apply_async (eager mode included).
    transaction.on_commit(lambda: current_app.signature(PAIRS_SELECT_TASK, args=(campaign.pk,)).delay())


def _shard_done(*, shard: GenerationShard, queue_selection: bool = True) -> None:
    """Mark the shard done, and its job succeeded if it was the last one; then (queue_selection) the new
    pairs' selection is queued, never run here, in the generation worker's loop."""
    with transaction.atomic():
        if not GenerationShard.objects.filter(pk=shard.pk, status=ShardStatus.RUNNING, attempt=shard.attempt).update(
            status=ShardStatus.DONE, finished_at=timezone.now()
        ):
            return
        # of=self: the campaign comes along for its pair_selection, but only the job row is locked.
        job = GenerationJob.objects.select_for_update(of=("self",)).select_related("campaign").get(pk=shard.job_id)
        if job.status == JobStatus.RUNNING and not job.shards.exclude(status=ShardStatus.DONE).exists():
            job.status, job.finished_at = JobStatus.SUCCEEDED, timezone.now()
            job.save(update_fields=["status", "finished_at"])
            if queue_selection:
                _selection_enqueue(campaign=job.campaign)


def _shard_release(*, shard: GenerationShard) -> None:
    """Put an interrupted shard back on the queue (its worker is stopping); another worker resumes it."""
    with transaction.atomic():
        if GenerationShard.objects.filter(pk=shard.pk, status=ShardStatus.RUNNING, attempt=shard.attempt).update(
            status=ShardStatus.QUEUED, worker=""
        ):
            _enqueue([shard.pk])


def _shard_run(
    *,
    shard: GenerationShard,
    on_progress: Callable[[GenerationJob], None] | None,
    should_stop: Callable[[], bool] | None,
    queue_selection: bool = True,
) -> bool:
    """Sample the shard's prompts that still lack this job's pairs, chunk by chunk; False if it was stopped.

    Slow work (the engine) runs outside any transaction; each chunk's rows are written in one.
    """
    job = GenerationJob.objects.select_related("campaign", "policy", "policy_b").get(pk=shard.job_id)
    phase = _Phase(job)
    draws: deque[_Draw] = deque()
    generator = None
    try:
        todo = list(selectors.shard_prompts_todo(shard=shard))
        progress = _Progress(job=job, shard=shard, stored=len(shard.prompt_ids) - len(todo), on_progress=on_progress)
        phase(JobPhase.LOADING)
        generator = get_generator()
        size = settings.GENERATION_CHUNK_SIZE
        chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
        with _ChunkStore(job=job, shard=shard, backend=generator.name, progress=progress) as store:
            # Chunks queued behind the one being collected, about twice as many samples
            # as the engine runs at once: it keeps sampling them while the oldest
            # chunk waits for its longest sample. On the tiny model, sampling chunk
            # by chunk cost ~20% of raw vLLM throughput, one chunk ahead ~10%.
            ahead = math.ceil(generator.capacity(job.policy) / size) if chunks else 0  # loads the engine
            for number in range(len(chunks)):
                phase(JobPhase.SAMPLING)
                while len(draws) <= ahead and number + len(draws) < len(chunks):
                    draws.append(
                        _draw_start(job=job, prompts=chunks[number + len(draws)], generator=generator, attempt=0)
                    )
                try:
                    drawn = _sample_pairs(
                        job=job, draw=draws[0], generator=generator, progress=progress, stop=should_stop
                    )
                except Stopped:  # the worker is shutting down: the chunk before lands, this one is dropped
                    if store.wait():
                        _shard_release(shard=shard)
                    return False
                draws.popleft()
                # The chunk before this one was stored while this one sampled; if it still is, the engine
                # goes on with the chunks queued behind (the next may have finished with this one).
                if draws:
                    generator.run_while(
                        draws[0].batches[0], busy=lambda: progress.storing, on_finished=progress.finished
                    )
                if not store.wait():
                    return False
                store.put(drawn)
                if should_stop and should_stop() and number + 1 < len(chunks):
                    if store.wait():
                        _shard_release(shard=shard)
                    return False
            phase(JobPhase.STORING)  # the engine is done: what is left is the last chunk's store
            if not store.wait():
                return False
    except Exception:
        with transaction.atomic():
            GenerationShard.objects.filter(pk=shard.pk, attempt=shard.attempt).update(
                status=ShardStatus.FAILED, finished_at=timezone.now()
            )
            GenerationJob.objects.filter(pk=job.pk, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
                status=JobStatus.FAILED, error=traceback.format_exc(limit=-8), finished_at=timezone.now()
            )
        raise
    finally:
        # A stopped or failed shard leaves queued chunks behind: the engine serves the next one.
        for draw in draws:
            _draw_discard(draw=draw, generator=generator)
    _shard_done(shard=shard, queue_selection=queue_selection)
    return True


def generation_shard_run(
    *, shard_id: int, worker: str, should_stop: Callable[[], bool] | None = None
) -> GenerationShard | None:
    """Run one shard if this worker can take it (the Celery task calls this); None when it could not.

    Idempotent: a shard that is done, or running on another worker, or whose job
    is finished, is left alone. `should_stop` is asked between the engine's steps and
    after each stored chunk: when it says yes (the worker is shutting down), the chunk
    being sampled is dropped, the one before it is stored, and the shard goes back on
    the queue, within a step of the request, whatever a chunk's length.
    """
    shard = _shard_claim(worker=worker, shard_id=shard_id)
    if shard is not None:
        _shard_run(shard=shard, on_progress=None, should_stop=should_stop)
    return shard


def generation_job_run(
    *,
    job: GenerationJob,
    on_progress: Callable[[GenerationJob], None] | None = None,
    worker: str = "",
    queue_selection: bool = True,
) -> GenerationJob:
    """Run the job's shards here, one after another, until none is left to take (`generate_pairs --wait`, the loop).

    Idempotent and resumable: a finished job is left alone, and shards left
    running by a dead run go on with the prompts that have no completions from
    the job yet. `on_progress` is called with the job after each stored chunk,
    and as samples finish. With queue_selection False, a finished job queues no pair selection: the caller
    (the loop harness, which sends nothing to a broker) picks the batch itself.
    """
    while (shard := _shard_claim(worker=worker, job=job)) is not None:
        if not _shard_run(shard=shard, on_progress=on_progress, should_stop=None, queue_selection=queue_selection):
            break  # stopped (cancelled, or the shard taken by another run): leave the rest to whoever took it
    job.refresh_from_db()
    return job


# --- Importing judged pairs ------------------------------------------------------

IMPORTED_BACKEND = "imported"
_IMPORT_BATCH = 2000


@dataclass(frozen=True)
class PreferenceImportResult:
    created: int
    duplicates: int  # pairs the campaign already had (this file imported before, or the same two answers)
    identical: int  # lines whose two answers are the same text: no preference to learn
    formats: dict[str, int]  # lines per detected format (importers.PREFERENCE_FORMATS' labels)
    policy: str  # the ModelVersion the answers are stored under
    use_as: str
    # New pairs on prompts the campaign already had in the other split: a held-out prompt's pairs stay
    # held out (so "train" pairs there are held out), and "heldout" pairs on a train prompt are held out
    # though the prompt's other pairs train.
    other_split: int = 0

    @property
    def format_label(self) -> str:
        return ", ".join(f"{label} ({n} lines)" for label, n in self.formats.items()) or "empty file"

    def __str__(self) -> str:
        return (
            f"imported {self.created} judged pairs as {self.use_as} (answers under {self.policy}), skipped "
            f"{self.duplicates} already in the campaign and {self.identical} with two identical answers; "
            f"format: {self.format_label}"
            + (f"; {self.other_split} on prompts the campaign already had in the other split" if self.other_split else "")
        )


def imported_policy(*, source: str) -> ModelVersion:
    """The ModelVersion a file's answers are stored under: "imported:<file name>". It is retired from the
    start: no generation job samples from it, and no campaign can make it its policy."""
    version, _ = ModelVersion.objects.get_or_create(
        name=f"imported:{os.path.basename(source)}"[:200],
        defaults={"base_path": "", "status": ModelVersionStatus.RETIRED},
    )
    return version


def preferences_import(*, campaign: Campaign, stream: io.TextIOBase, source: str, use_as: str) -> PreferenceImportResult:
    """Import a preference file (importers.parse_preferences) as judged pairs, whole or not at all.

    Each line becomes a comparison of its two answers with one judgment of source
    "imported" (the preferred answer wins). `use_as`: "train" pairs are training data;
    "heldout" pairs are held out (new prompts go to the held-out split, the answers are
    marked held-out) for evaluation; "gold" pairs are gold with the preferred answer.
    The export, gate and dashboards count imported judgments only when asked for
    (training.config.AggregationPolicy.sources). A pair the campaign already has (the
    same two answers on the same prompt) is skipped, so importing a file again adds nothing.
    """
    if use_as not in importers.PREFERENCE_USES:
        raise ValueError(f"use_as must be one of {', '.join(importers.PREFERENCE_USES)}, not {use_as!r}")
    name = os.path.basename(source)
    rows = importers.parse_preferences(stream, source=name)
    formats = Counter(importers.PREFERENCE_FORMATS[row.fmt] for row in rows)
    distinct = [row for row in rows if not row.identical]
    split = Split.HELDOUT if use_as == "heldout" else Split.TRAIN
    for row in distinct:
        row.prompt.split = split
    with transaction.atomic():
        labeling_services.prompts_store(campaign=campaign, rows=[row.prompt for row in distinct], source=name)
        hashes = list({row.prompt.content_hash for row in distinct})
        prompts: dict[str, int] = {}
        other_split: set[int] = set()
        for start in range(0, len(hashes), _IMPORT_BATCH):
            batch = hashes[start : start + _IMPORT_BATCH]
            for key, pk, prompt_split in Prompt.objects.filter(campaign=campaign, content_hash__in=batch).values_list(
                "content_hash", "pk", "split"
            ):
                prompts[key] = pk
                if prompt_split != split:
                    other_split.add(pk)
        # The rule generation keeps too: a prompt never gets a second pair of the same two answers.
        existing: set[tuple[int, str]] = set()
        prompt_ids = list(prompts.values())
        for start in range(0, len(prompt_ids), _IMPORT_BATCH):
            existing |= selectors.comparison_digests(prompt_ids=prompt_ids[start : start + _IMPORT_BATCH])
        fresh = []
        for row in distinct:
            key = (prompts[row.prompt.content_hash], pair_digest(row.chosen, row.rejected))
            if key not in existing:
                existing.add(key)
                fresh.append(row)
        policy = imported_policy(source=name)
        created = 0
        for start in range(0, len(fresh), _IMPORT_BATCH):
            created += _store_imported_pairs(fresh[start : start + _IMPORT_BATCH], prompts, policy, use_as)
    return PreferenceImportResult(
        created=created,
        duplicates=len(distinct) - len(fresh),
        identical=len(rows) - len(distinct),
        formats=dict(formats),
        policy=policy.name,
        use_as=use_as,
        other_split=sum(prompts[row.prompt.content_hash] in other_split for row in fresh),
    )


def _store_imported_pairs(
    rows: list[importers.PreferenceRow], prompts: dict[str, int], policy: ModelVersion, use_as: str
) -> int:
    completions = Completion.objects.bulk_create(
        Completion(
            prompt_id=prompts[row.prompt.content_hash],
            model_version=policy,
            text=text,
            backend=IMPORTED_BACKEND,
            is_heldout=use_as == "heldout",
        )
        for row in rows
        for text in (row.chosen, row.rejected)
    )
    judged = []
    for i, row in enumerate(rows):
        chosen, rejected = completions[2 * i].pk, completions[2 * i + 1].pk
        # Which answer is "a" is drawn from the line's content, not its place in the file: a data set
        # listing the preferred answer first must not become a pile of "a wins" (nor vary between runs).
        digest = hashlib.sha256(f"{row.prompt.content_hash}:{row.chosen}:{row.rejected}".encode()).digest()
        chosen_is_a = digest[0] % 2 == 0
        a, b = (chosen, rejected) if chosen_is_a else (rejected, chosen)
        digest = pair_digest(row.chosen, row.rejected)
        judged.append((prompts[row.prompt.content_hash], a, b, digest, Choice.A if chosen_is_a else Choice.B))
    return labeling_services.comparisons_create_judged(rows=judged, gold=use_as == "gold")

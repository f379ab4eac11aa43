"""A job run outside a transaction (a worker, `generate_pairs`) stores its chunks on a thread of its own while the
engine samples the next chunk: every pair once, in order, and nothing after a stop or a failed store.

These tests commit (transaction=True): the storing thread has its own connection and sees only committed rows.
"""

import threading

import pytest
from django.db import OperationalError, connection
from django.db.models import Count

from generation import services
from generation.models import Completion, GenerationJob, GenerationShard, JobStatus, ModelVersion, ShardStatus
from labeling.models import Campaign, Comparison, Prompt

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def vllm_backend(settings, vllm_generator):
    settings.GENERATION_BACKEND = "vllm"
    settings.GENERATION_CHUNK_SIZE = 2  # five prompts: chunks of 2, 2 and 1
    return vllm_generator


@pytest.fixture
def store_threads(monkeypatch) -> list[str]:
    """The names of the threads that stored the chunks (the real store runs)."""
    names: list[str] = []
    store_chunk = services._store_chunk

    def recorded(**options):
        names.append(threading.current_thread().name)
        return store_chunk(**options)

    monkeypatch.setattr(services, "_store_chunk", recorded)
    return names


def store_threads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("generation-store")]


def assert_engine_idle(generator, policy: ModelVersion) -> None:
    # The chunks queued ahead were dropped, not left to run or to wait in memory.
    assert not generator.engine(policy.base_path).llm_engine.has_unfinished_requests() and not generator._finished


def test_chunks_are_stored_on_a_thread_each_pair_once_with_progress_in_order(
    vllm_backend, store_threads, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy, seed=5, max_tokens=16)
    done_seen: list[int] = []

    job = services.generation_job_run(job=job, on_progress=lambda current: done_seen.append(current.done))

    assert (job.status, job.done, job.total) == (JobStatus.SUCCEEDED, 5, 5)
    assert len(store_threads) == 3 and all(name.startswith("generation-store") for name in store_threads)
    per_prompt = Completion.objects.filter(job=job).values("prompt").annotate(n=Count("id"))
    assert sorted(row["n"] for row in per_prompt) == [2] * 5
    assert Comparison.objects.count() == 5
    assert done_seen == sorted(done_seen) and {2, 4, 5} <= set(done_seen)  # every chunk told, in order
    assert GenerationShard.objects.get(job=job).sampled == 5
    assert not store_threads_alive()  # the thread ended with the run


def test_a_job_cancelled_while_chunks_are_stored_on_a_thread_stores_nothing_after(
    vllm_backend, store_threads, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy, max_tokens=16)

    def cancel_after_first_chunk(current: GenerationJob) -> None:
        if current.done:
            services.generation_job_cancel(job=current)

    job = services.generation_job_run(job=job, on_progress=cancel_after_first_chunk)

    assert (job.status, job.done) == (JobStatus.CANCELLED, 2)
    # The second chunk, sampled while the first was stored, went to the thread after the cancel: refused.
    assert len(store_threads) == 2
    assert Completion.objects.filter(job=job).count() == 4 and Comparison.objects.count() == 2
    assert_engine_idle(vllm_backend, policy)
    assert not store_threads_alive()


def test_a_store_failing_on_the_thread_fails_the_job_and_stores_nothing_more(
    vllm_backend, monkeypatch, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    store_chunk, stores = services._store_chunk, []

    def database_fails_on_second_chunk(**options):
        # The storing thread's own connection: the database refuses the second chunk's comparisons.
        def refuse(execute, sql, params, many, context):
            if 'INSERT INTO "labeling_comparison"' in sql:
                raise OperationalError("disk full")
            return execute(sql, params, many, context)

        stores.append(threading.current_thread().name)
        if len(stores) < 2:
            return store_chunk(**options)
        with connection.execute_wrapper(refuse):
            return store_chunk(**options)

    monkeypatch.setattr(services, "_store_chunk", database_fails_on_second_chunk)
    job = services.generation_job_create(campaign=campaign, policy=policy, max_tokens=16)

    with pytest.raises(OperationalError, match="disk full"):
        services.generation_job_run(job=job)

    job.refresh_from_db()
    assert (job.status, job.done) == (JobStatus.FAILED, 2) and "disk full" in job.error
    assert GenerationShard.objects.get(job=job).status == ShardStatus.FAILED
    assert len(stores) == 2 and all(name.startswith("generation-store") for name in stores)
    assert Completion.objects.filter(job=job).count() == 4  # the failed chunk's transaction left nothing
    assert_engine_idle(vllm_backend, policy)
    assert not store_threads_alive()

"""A job run outside a transaction (a worker, `generate_pairs`) stores its chunks in the worker's storing process
while the engine samples the next chunk: every pair once, in order, and nothing after a stop or a failed store.

These tests commit (transaction=True): the storing process has its own connection and sees only committed rows.
They need a database other processes can reach (the suite's in-memory SQLite is this process's alone, and there
chunks are stored inline), and PostgreSQL to watch that connection and to refuse a chunk.
"""

import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest
from django.db import IntegrityError, connection
from django.db.models import Count

from generation import services, store_process
from generation.models import Completion, GenerationJob, GenerationShard, JobStatus, ModelVersion, ShardStatus
from labeling.models import Campaign, Comparison, Prompt
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the storing process needs a database it can reach; these checks read PostgreSQL's activity")


@pytest.fixture
def vllm_backend(settings, vllm_generator):
    settings.GENERATION_BACKEND = "vllm"
    settings.GENERATION_CHUNK_SIZE = 2  # five prompts: chunks of 2, 2 and 1
    return vllm_generator


def other_connections() -> list[int]:
    """The backend pids of this database's other client sessions (the storing process's, while a shard runs)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return [pid for (pid,) in cursor.fetchall()]


def assert_connections_closed() -> None:
    """No other session is left: the storing process closed its connection. A closed connection's backend
    leaves pg_stat_activity when it has exited, a moment after the client hung up (longer on a loaded machine),
    so this waits for that."""
    wait_until(lambda: not other_connections(), what="the storing process's connection to close", within_s=10)


def assert_engine_idle(generator, policy: ModelVersion) -> None:
    # The chunks queued ahead were dropped, not left to run or to wait in memory.
    assert not generator.engine(policy.base_path).llm_engine.has_unfinished_requests() and not generator._finished


def test_chunks_are_stored_by_the_storing_process_each_pair_once_with_progress_in_order(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy, seed=5, max_tokens=16)
    done_seen: list[int] = []
    storers: list[list[int]] = []

    def progress(current: GenerationJob) -> None:
        if current.done and current.done not in done_seen:  # a chunk was stored (not just sampled)
            storers.append(other_connections())
        done_seen.append(current.done)

    job = services.generation_job_run(job=job, on_progress=progress)

    assert (job.status, job.done, job.total) == (JobStatus.SUCCEEDED, 5, 5)
    per_prompt = Completion.objects.filter(job=job).values("prompt").annotate(n=Count("id"))
    assert sorted(row["n"] for row in per_prompt) == [2] * 5
    assert Comparison.objects.count() == 5
    assert done_seen == sorted(done_seen) and {2, 4, 5} <= set(done_seen)  # every chunk told, in order
    assert GenerationShard.objects.get(job=job).sampled == 5
    # One other connection wrote the chunks, the same all along (the storing process's), and it was
    # closed with the shard.
    assert len(storers) == 3 and len({tuple(pids) for pids in storers}) == 1 and len(storers[0]) == 1
    assert_connections_closed()


def test_a_job_cancelled_while_chunks_are_stored_stores_nothing_after(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    job = services.generation_job_create(campaign=campaign, policy=policy, max_tokens=16)

    def cancel_after_first_chunk(current: GenerationJob) -> None:
        if current.done:
            services.generation_job_cancel(job=current)

    job = services.generation_job_run(job=job, on_progress=cancel_after_first_chunk)

    # The second chunk, sampled while the first was stored, went to the store after the cancel: refused.
    assert (job.status, job.done) == (JobStatus.CANCELLED, 2)
    assert Completion.objects.filter(job=job).count() == 4 and Comparison.objects.count() == 2
    assert_engine_idle(vllm_backend, policy)
    assert_connections_closed()


def test_a_store_failing_in_the_storing_process_fails_the_job_and_stores_nothing_more(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    refuse = "ALTER TABLE labeling_comparison ADD CONSTRAINT test_refuse_new_pairs CHECK (false) NOT VALID"

    def refuse_pairs_after_first_chunk(current: GenerationJob) -> None:
        # NOT VALID: the rows there stay; every new pair is refused, as a full disk would refuse it.
        if current.done == 2:
            with connection.cursor() as cursor:
                cursor.execute(refuse)

    job = services.generation_job_create(campaign=campaign, policy=policy, max_tokens=16)
    try:
        with pytest.raises(IntegrityError, match="test_refuse_new_pairs"):
            services.generation_job_run(job=job, on_progress=refuse_pairs_after_first_chunk)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE labeling_comparison DROP CONSTRAINT IF EXISTS test_refuse_new_pairs")

    job.refresh_from_db()
    assert (job.status, job.done) == (JobStatus.FAILED, 2) and "test_refuse_new_pairs" in job.error
    assert GenerationShard.objects.get(job=job).status == ShardStatus.FAILED
    assert Completion.objects.filter(job=job).count() == 4  # the failed chunk's transaction left nothing
    assert_engine_idle(vllm_backend, policy)
    assert_connections_closed()


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would


def test_a_killed_storing_process_fails_the_store_it_ran_and_the_next_store_gets_a_new_one(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    database = connection.settings_dict
    first = store_process.submit(database, os.getpid).result()
    with pytest.raises(BrokenProcessPool):
        store_process.submit(database, kill_self).result()

    job = services.generation_job_create(campaign=campaign, policy=policy, seed=3, max_tokens=16)
    job = services.generation_job_run(job=job)

    assert (job.status, job.done) == (JobStatus.SUCCEEDED, 5)
    assert store_process.submit(database, os.getpid).result() not in (first, os.getpid())

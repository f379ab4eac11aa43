"""A job in shards: any worker takes any shard, never one another worker holds; shards resume on their own."""

import threading

import pytest
from django.db import connection, transaction

from generation import services
from generation.models import GenerationJob, GenerationShard, JobStatus, ModelVersion, ShardStatus
from labeling.models import Campaign, Prompt
from tests.generation.conftest import demo_lines, import_prompts


@pytest.mark.django_db
def test_a_job_is_split_into_shards_of_the_configured_size_in_serving_order(
    settings, campaign: Campaign, policy: ModelVersion, django_capture_on_commit_callbacks
) -> None:
    settings.GENERATION_SHARD_SIZE = 4
    import_prompts(campaign, demo_lines(10))
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.generation_job_start(campaign=campaign, policy=policy)
    shards = list(job.shards.order_by("number"))
    assert [len(s.prompt_ids) for s in shards] == [4, 4, 2] and job.total == 10
    serving = list(Prompt.objects.filter(campaign=campaign).order_by("-priority", "id").values_list("pk", flat=True))
    assert [pk for s in shards for pk in s.prompt_ids] == serving
    assert len(callbacks) == 1  # one message per shard, sent after commit
    assert {s.status for s in shards} == {ShardStatus.QUEUED}


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_shards_never_get_the_same_one(
    settings, campaign: Campaign, policy: ModelVersion
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks (SKIP LOCKED)")
    settings.GENERATION_SHARD_SIZE = 2
    import_prompts(campaign, demo_lines(4))
    job = services.generation_job_create(campaign=campaign, policy=policy)
    first, second = job.shards.order_by("number")
    holding, release, claimed = threading.Event(), threading.Event(), []

    def worker_a() -> None:
        try:
            with transaction.atomic():  # claim, then hold the row lock open as a slow commit would
                claimed.append(services._shard_claim(worker="gen-a@host", job=job))
                holding.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    thread = threading.Thread(target=worker_a)
    thread.start()
    try:
        assert holding.wait(timeout=60)
        assert claimed[0].pk == first.pk
        # Worker b does not wait on a's lock: it skips that shard, and takes the next.
        assert services._shard_claim(worker="gen-b@host", shard_id=first.pk) is None
        assert services._shard_claim(worker="gen-b@host", job=job).pk == second.pk
    finally:
        release.set()
        thread.join()
    # Committed: the shard is a's, and a redelivered message for it does nothing on b; nothing is left for c.
    assert services._shard_claim(worker="gen-b@host", shard_id=first.pk) is None
    assert services._shard_claim(worker="gen-c@host", job=job) is None
    assert GenerationShard.objects.get(pk=first.pk).worker == "gen-a@host"
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.RUNNING


@pytest.mark.slow
@pytest.mark.django_db
def test_a_shard_told_to_stop_goes_back_on_the_queue_and_another_worker_resumes_it(
    settings, vllm_generator, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion,
    django_capture_on_commit_callbacks,
) -> None:
    from generation.models import Completion

    settings.GENERATION_BACKEND = "vllm"
    settings.GENERATION_CHUNK_SIZE = 2
    job = services.generation_job_create(campaign=campaign, policy=policy, seed=2, max_tokens=16)
    shard = job.shards.get()
    with django_capture_on_commit_callbacks() as callbacks:
        # What the task passes when its worker starts a warm shutdown.
        services.generation_shard_run(shard_id=shard.pk, worker="gen-a@host", should_stop=lambda: True)
    shard.refresh_from_db()
    job.refresh_from_db()
    # Asked between engine steps, it stops before the first chunk is done: nothing is stored, and nothing waits.
    assert (shard.status, shard.worker, job.status, job.done) == (ShardStatus.QUEUED, "", JobStatus.RUNNING, 0)
    assert len(callbacks) == 1  # the shard's message is sent again
    engine = vllm_generator.engine(policy.base_path).llm_engine
    assert not engine.has_unfinished_requests()  # the chunk being sampled and those queued ahead were dropped

    services.generation_shard_run(shard_id=shard.pk, worker="gen-b@host")
    job.refresh_from_db()
    assert (job.status, job.done) == (JobStatus.SUCCEEDED, 5)
    assert Completion.objects.filter(job=job).count() == 10

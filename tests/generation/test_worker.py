"""Real Celery workers (solo pool, generation queue) against Redis and PostgreSQL: killed mid-job and resumed,
sharing one job's shards, stopped warmly mid-shard, logging vLLM's lines at their own level."""

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count

from generation import services
from generation.models import Completion, GenerationJob, GenerationShard, JobStatus, ModelVersion, ShardStatus
from labeling.models import Campaign, Comparison
from tests.generation.conftest import demo_lines, import_prompts
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

DEADLINE_S = 600  # a bound on a hung worker, not a timing check


@pytest.fixture
def redis_broker() -> Iterator[str]:
    if connection.vendor != "postgresql":
        pytest.skip("the worker process must see this test's rows: SQLite test databases live in memory")
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        pytest.skip("needs a Redis broker: set CELERY_BROKER_URL=redis://127.0.0.1:6379/N")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()  # the killed worker's unacknowledged message stays behind otherwise


def worker_database_url() -> str:
    # The test database (test_<name>) that this session created: the worker must write where the test reads.
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    def __init__(self, *, broker: str, log: Path, chunk_size: int, name: str = "") -> None:
        self.log = log
        env = {
            **os.environ,
            "DATABASE_URL": worker_database_url(),
            "CELERY_BROKER_URL": broker,
            "GENERATION_BACKEND": "vllm",
            "GENERATION_CHUNK_SIZE": str(chunk_size),
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "solo", "-Q", "generation"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info", "-n", f"{name or log.stem}@%h"]
        with log.open("wb") as out:
            # Its own session, so the kill below reaches the worker and nothing else.
            self.process = subprocess.Popen(
                command, cwd=settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        wait_for(condition, what, [self])

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> int:
        """SIGTERM (a warm shutdown, as stopping `make run` sends) and wait for the worker to exit on its own."""
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {DEADLINE_S} s after SIGTERM:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(condition: Callable[[], bool], what: str, workers: Iterable[Worker]) -> None:
    """Poll `condition` until it holds; fail at once if one of `workers` exits, or after DEADLINE_S."""
    workers = list(workers)

    def holds() -> bool:
        if condition():
            return True
        for worker in workers:
            if worker.process.poll() is not None:
                pytest.fail(f"worker exited ({worker.process.returncode}) before {what}:\n{worker.log.read_text()[-3000:]}")
        return False

    def logs() -> str:
        return "\n".join(f"--- {worker.log.name}\n{worker.log.read_text()[-3000:]}" for worker in workers)

    wait_until(holds, what=what, within_s=DEADLINE_S, detail=logs)


def test_worker_killed_mid_job_resumes_it_when_restarted_without_duplicates(
    transactional_db, redis_broker: str, campaign: Campaign, policy: ModelVersion, tmp_path: Path
) -> None:
    import_prompts(campaign, demo_lines(150))
    job = services.generation_job_start(campaign=campaign, policy=policy, seed=3, max_tokens=64)  # enqueued: autocommit

    def stored() -> GenerationJob:
        return GenerationJob.objects.get(pk=job.pk)

    # One prompt per chunk: the first worker is sure to die with most of the job left.
    first = Worker(broker=redis_broker, log=tmp_path / "worker-1.log", chunk_size=1)
    try:
        first.wait_for(lambda: stored().done >= 2, "a stored chunk")
        first.kill()
    finally:
        first.stop()
    crashed = stored()
    assert crashed.status == JobStatus.RUNNING and 2 <= crashed.done < crashed.total == 150

    assert crashed.worker.startswith("worker-1@")
    # The same worker started again (as a supervisor would): nobody presses "Resume".
    second = Worker(broker=redis_broker, log=tmp_path / "worker-1-again.log", name="worker-1", chunk_size=64)
    try:
        second.wait_for(lambda: stored().status in services.FINISHED_STATES, "the job's end")
    finally:
        second.stop()

    finished = stored()
    assert (finished.status, finished.done, finished.total) == (JobStatus.SUCCEEDED, 150, 150), finished.error
    per_prompt = Completion.objects.filter(job=job).values("prompt").annotate(n=Count("id"))
    assert len(per_prompt) == 150 and {row["n"] for row in per_prompt} == {2}
    assert Comparison.objects.count() == 150 - finished.skipped_identical
    assert set(Completion.objects.values_list("backend", flat=True)) == {"vllm"}


def test_two_workers_share_a_job_one_killed_and_one_stopped_mid_shard_and_every_prompt_is_sampled_once(
    transactional_db, redis_broker: str, settings, campaign: Campaign, policy: ModelVersion, tmp_path: Path
) -> None:
    settings.GENERATION_SHARD_SIZE = 20
    import_prompts(campaign, demo_lines(60))
    job = services.generation_job_start(campaign=campaign, policy=policy, seed=4, max_tokens=48)
    assert job.shards.count() == 3
    workers: dict[str, Worker] = {}

    def mid_shard(name: str) -> GenerationShard | None:
        """The shard `name` is running with some, but under half, of its prompts stored: well before its end."""
        for shard in GenerationShard.objects.filter(job=job, status=ShardStatus.RUNNING, worker__startswith=f"{name}@"):
            stored = Completion.objects.filter(job=job, prompt_id__in=shard.prompt_ids).values("prompt").distinct()
            if 0 < stored.count() < len(shard.prompt_ids) / 2:
                return shard
        return None

    def took_part(name: str) -> bool:
        """Whether `name` has stored part of a shard it claimed (running still, or done)."""
        shards = GenerationShard.objects.filter(job=job, worker__startswith=f"{name}@")
        prompt_ids = [pk for shard in shards for pk in shard.prompt_ids]
        return Completion.objects.filter(job=job, prompt_id__in=prompt_ids).exists()

    # One prompt per chunk: a shard's 20 chunks are stored as their samples finish, spread over its run.
    # Both start at once and race for the shards; which one loads its engine first is up to the host.
    for name in ("gen-a", "gen-b"):
        workers[name] = Worker(broker=redis_broker, log=tmp_path / f"{name}.log", name=name, chunk_size=1)
    try:
        held: dict[str, GenerationShard] = {}

        def someone_mid_shard() -> bool:
            held.update({name: shard for name in workers if (shard := mid_shard(name))})
            return bool(held)

        wait_for(someone_mid_shard, "a worker storing part of a shard", workers.values())
        doomed, killed = next(iter(held.items()))
        survivor = next(name for name in workers if name != doomed)
        workers[doomed].kill()  # its host dies mid-shard
        wait_for(lambda: took_part(survivor), f"{survivor} storing part of another shard", [workers[survivor]])
        # Warm shutdown (SIGTERM): it exits on its own at the engine's next step, handing back the rest of its
        # shard (test_shards shows the hand-back; here the engine may finish the shard first).
        assert workers[survivor].terminate() == 0
    finally:
        for worker in workers.values():
            worker.stop()
    assert not GenerationShard.objects.filter(job=job, status=ShardStatus.RUNNING, worker__startswith=f"{survivor}@").exists()
    killed.refresh_from_db()
    assert killed.status == ShardStatus.RUNNING and killed.attempt == 1 and killed.worker.startswith(f"{doomed}@")

    # vLLM's own lines keep their level under Celery's logging (they used to come out as WARNING/MainProcess).
    log = workers[survivor].log.read_text()
    assert re.search(r"INFO/MainProcess\] .*(vLLM|engine|model)", log, re.IGNORECASE), log[-3000:]
    assert not re.search(r"WARNING/MainProcess\] (INFO|DEBUG) ", log), log[-3000:]

    # The killed worker comes back (as a supervisor would restart it): it requeues its orphan and finishes the job.
    again = Worker(broker=redis_broker, log=tmp_path / f"{doomed}-again.log", name=doomed, chunk_size=16)
    try:
        again.wait_for(lambda: GenerationJob.objects.get(pk=job.pk).status in services.FINISHED_STATES, "the job's end")
    finally:
        again.stop()

    finished = GenerationJob.objects.get(pk=job.pk)
    assert (finished.status, finished.done, finished.total) == (JobStatus.SUCCEEDED, 60, 60), finished.error
    per_prompt = Completion.objects.filter(job=job).values("prompt").annotate(n=Count("id"))
    assert len(per_prompt) == 60 and {row["n"] for row in per_prompt} == {2}  # no prompt sampled twice
    assert Comparison.objects.count() == 60 - finished.skipped_identical - finished.duplicates
    assert set(GenerationShard.objects.filter(job=job).values_list("status", flat=True)) == {ShardStatus.DONE}
    killed.refresh_from_db()
    assert killed.attempt == 2  # resumed once, by the restarted worker

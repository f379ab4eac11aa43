"""A real Celery worker (solo pool, generation queue) against Redis and PostgreSQL, killed mid-job and resumed."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count

from generation import services
from generation.models import Completion, GenerationJob, JobStatus, ModelVersion
from labeling.models import Campaign, Comparison
from tests.generation.conftest import demo_lines, import_prompts

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
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"worker exited ({self.process.returncode}) before {what}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {DEADLINE_S} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


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


def test_worker_stopped_mid_job_exits_by_itself_and_hands_the_job_back(
    transactional_db, redis_broker: str, campaign: Campaign, policy: ModelVersion, tmp_path: Path
) -> None:
    import_prompts(campaign, demo_lines(150))
    job = services.generation_job_start(campaign=campaign, policy=policy, seed=3, max_tokens=64)

    def stored() -> GenerationJob:
        return GenerationJob.objects.get(pk=job.pk)

    first = Worker(broker=redis_broker, log=tmp_path / "worker-1.log", chunk_size=1)
    try:
        first.wait_for(lambda: stored().done >= 2, "a stored chunk")
        os.killpg(first.process.pid, signal.SIGTERM)  # what honcho (Ctrl-C) or systemd sends
        assert first.process.wait(timeout=DEADLINE_S) == 0, first.log.read_text()[-3000:]
    finally:
        first.stop()
    handed_back = stored()
    # Stopped at a chunk's end, well before the job's: queued again for any worker, not left "running".
    assert handed_back.status == JobStatus.QUEUED and 2 <= handed_back.done < 150

    other = Worker(broker=redis_broker, log=tmp_path / "worker-2.log", chunk_size=64)
    try:
        other.wait_for(lambda: stored().status in services.FINISHED_STATES, "the job's end")
    finally:
        other.stop()
    finished = stored()
    assert (finished.status, finished.done) == (JobStatus.SUCCEEDED, 150), finished.error
    assert Completion.objects.filter(job=job).count() == 300

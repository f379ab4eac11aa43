import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down

from generation import services

# Set when this worker starts a warm shutdown (SIGTERM, e.g. stopping `make run`):
# the running shard stops after its current chunk and goes back on the queue, so
# the worker exits within its grace time instead of finishing a long shard.
_shutting_down = threading.Event()


@shared_task(bind=True)
def generation_shard_run_task(self, shard_id: int) -> None:
    # Thin on purpose: generation_shard_run claims the shard first, so a
    # redelivered message (acks_late after a crash) resumes it or does nothing.
    services.generation_shard_run(
        shard_id=shard_id, worker=self.request.hostname or "", should_stop=_shutting_down.is_set
    )


@worker_ready.connect
def _recover_orphaned_shards(sender, **kwargs) -> None:
    # A worker restarted after a crash puts the shards it was running back on the queue at once.
    services.generation_jobs_recover(worker=sender.hostname)


@worker_shutting_down.connect
def _stop_after_this_chunk(**kwargs) -> None:
    _shutting_down.set()

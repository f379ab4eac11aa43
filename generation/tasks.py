import logging
import os
import sys
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from django.conf import settings

from generation import services, store_process

# Set when this worker starts a warm shutdown (SIGTERM, e.g. stopping `make run`):
# the running shard stops at the engine's next step and goes back on the queue, so
# the worker exits within its grace time instead of finishing a long chunk or shard.
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


@worker_shutdown.connect
def _exit_without_engine_teardown(sender, **kwargs) -> None:
    # The worker has stopped and its job is stored or queued again. What remains in a
    # process that loaded vLLM is the engine's atexit teardown (a full garbage collection,
    # distributed cleanup) and Python's: 13 s measured on a busy 2-core host, well past
    # honcho's 5 s before SIGKILL. The in-process engine holds nothing the OS does not
    # free at once. (Multi-GPU engines run their workers in child processes: not this path.)
    multiprocess = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0" or settings.VLLM_TENSOR_PARALLEL_SIZE > 1
    if "vllm" not in sys.modules or multiprocess:
        return
    store_process.shutdown()  # what Python's exit would do for it: its queues' semaphores are released
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(getattr(sender, "exitcode", 0) or 0)

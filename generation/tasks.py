import logging
import os
import sys
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from django.conf import settings

from generation import services
from generation.models import GenerationJob

# Set when this process's worker starts a warm shutdown (SIGTERM, Ctrl-C): a running
# job then hands its remaining prompts back to the queue at its next chunk instead of
# finishing them all while a supervisor (honcho: 5 s) waits to SIGKILL the worker.
_shutting_down = threading.Event()


@shared_task(bind=True)
def generation_job_run_task(self, job_id: int) -> None:
    # Thin on purpose: generation_job_run re-checks the job's state, so a
    # redelivered message (acks_late after a crash) resumes or does nothing.
    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is not None:
        services.generation_job_run(job=job, worker=self.request.hostname or "", should_stop=_shutting_down.is_set)


@worker_ready.connect
def _recover_orphaned_jobs(sender, **kwargs) -> None:
    # A worker restarted after a crash picks its unfinished job up again at once.
    services.generation_jobs_recover(worker=sender.hostname)


@worker_shutting_down.connect
def _stop_between_chunks(**kwargs) -> None:
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
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(getattr(sender, "exitcode", 0) or 0)

import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down

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

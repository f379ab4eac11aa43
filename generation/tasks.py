from celery import shared_task
from celery.signals import worker_ready

from generation import services
from generation.models import GenerationJob


@shared_task(bind=True)
def generation_job_run_task(self, job_id: int) -> None:
    # Thin on purpose: generation_job_run re-checks the job's state, so a
    # redelivered message (acks_late after a crash) resumes or does nothing.
    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is not None:
        services.generation_job_run(job=job, worker=self.request.hostname or "")


@worker_ready.connect
def _recover_orphaned_jobs(sender, **kwargs) -> None:
    # A worker restarted after a crash picks its unfinished job up again at once.
    services.generation_jobs_recover(worker=sender.hostname)

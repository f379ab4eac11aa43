from celery import shared_task

from generation import services
from generation.models import GenerationJob


@shared_task
def generation_job_run_task(job_id: int) -> None:
    # Thin on purpose: generation_job_run re-checks the job's state, so a
    # redelivered message (acks_late after a crash) resumes or does nothing.
    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is not None:
        services.generation_job_run(job=job)

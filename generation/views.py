from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from generation import selectors, services
from generation.api import SKIPS_SHOWN
from generation.models import GenerationJob
from labeling.access import staff_required


@staff_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob.objects.select_related("campaign", "policy", "policy_b"), pk=pk)
    context = {
        "job": job,
        "finished": job.status in services.FINISHED_STATES,
        "sampled": selectors.job_sampled(job=job),
        "skips": job.skips.select_related("prompt")[:SKIPS_SHOWN],  # each named by its opening words and file
    }
    return render(request, "generation/job_detail.html", context)

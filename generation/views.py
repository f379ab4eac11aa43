from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from generation import services
from generation.models import GenerationJob
from labeling.access import staff_required


@staff_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob.objects.select_related("campaign", "policy", "policy_b"), pk=pk)
    return render(
        request, "generation/job_detail.html", {"job": job, "finished": job.status in services.FINISHED_STATES}
    )

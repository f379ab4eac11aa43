from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import never_cache

from labeling import quality, selectors, services
from labeling.access import staff_required
from labeling.api import NOT_A_MEMBER, pair_data, progress_data
from labeling.models import Campaign, JudgmentSource
from labeling.rendering import markdown_to_safe_html

# Defense in depth for pages showing model output: even if sanitizing failed,
# no inline script, event handler, frame or plugin could run.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "labeling/home.html", {"campaigns": selectors.campaigns_listed(user=request.user)})


@never_cache
@login_required
def label(request: HttpRequest, pk: int) -> HttpResponse:
    """The comparison page: the first pair comes embedded; compare.js fetches the rest through the API."""
    campaign = get_object_or_404(selectors.campaigns_for_labeling(), pk=pk)
    if not selectors.campaign_open_to(campaign=campaign, user=request.user):
        raise PermissionDenied(NOT_A_MEMBER)
    assignment = services.assignment_next(campaign=campaign, annotator=request.user)
    context = {
        "campaign": campaign,
        "guidelines_html": markdown_to_safe_html(campaign.guidelines),
        "choices": selectors.campaign_allowed_choices(campaign=campaign),
        "first_pair": pair_data(assignment, campaign) if assignment else None,
        "progress": progress_data(campaign=campaign, annotator=request.user),
        "undo_window_s": settings.LABELING_UNDO_WINDOW_S,
    }
    response = render(request, "labeling/label.html", context)
    response["Content-Security-Policy"] = _CSP
    return response


def _report_sources(request: HttpRequest) -> list[str]:
    """`?source=human&source=simulated`: the judgment sources the figures are over (human ones by default)."""
    sources = request.GET.getlist("source") or [JudgmentSource.HUMAN]
    unknown = sorted(set(sources) - set(JudgmentSource.values))
    if unknown:
        raise Http404(f"unknown judgment source {', '.join(unknown)}")
    return sources


@staff_required
def dashboard(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    report = quality.campaign_report(campaign=campaign, sources=_report_sources(request))
    sources = [
        (label, report.by_source.get(value, 0), value in report.sources, urlencode({"source": [*report.sources, value]}, doseq=True))
        for value, label in JudgmentSource.choices
    ]
    context = {
        "report": report,
        "sources": sources,
        "plot_query": request.GET.urlencode(),
        "flags": selectors.campaign_flag_counts(campaign=campaign),
    }
    response = render(request, "labeling/dashboard.html", context)
    response["Content-Security-Policy"] = _CSP
    return response


@staff_required
def dashboard_plot(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    png = quality.report_plot_png(quality.campaign_series(campaign=campaign, sources=_report_sources(request)))
    return HttpResponse(png, content_type="image/png")

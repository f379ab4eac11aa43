from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from labeling.access import staff_required
from labeling.models import Campaign
from training import leaderboard, plots, selectors, services
from training.models import TrainingRound


def _png(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "no-store"  # curves change while a round runs
    return response


@staff_required
def rounds_index(request: HttpRequest) -> HttpResponse:
    campaigns = [
        (
            campaign,
            list(selectors.rounds_for_campaign(campaign=campaign).order_by("-number")[:50]),
            selectors.loop_report_read(campaign=campaign),
            leaderboard.campaign_leaderboard(campaign=campaign),
        )
        for campaign in Campaign.objects.filter(training_rounds__isnull=False).distinct().order_by("name")
    ]
    return render(request, "training/rounds.html", {"campaigns": campaigns})


@staff_required
def round_detail(request: HttpRequest, pk: int) -> HttpResponse:
    training_round = get_object_or_404(
        TrainingRound.objects.select_related(
            "campaign", "start_version", "reference_version", "output_version", "snapshot", "heldout_snapshot"
        ),
        pk=pk,
    )
    evidence = training_round.evidence
    moments = (("start", "at start"), ("export", "at export"))
    columns = [(label, evidence[key]) for key, label in moments if key in evidence]
    table = selectors.evidence_table(columns) if columns else None
    return render(request, "training/round_detail.html", {"round": training_round, "evidence_table": table})


@staff_required
def round_status(request: HttpRequest, pk: int) -> JsonResponse:
    training_round = get_object_or_404(TrainingRound, pk=pk)
    return JsonResponse(
        {
            "status": training_round.status,
            "status_label": training_round.get_status_display(),
            "active": training_round.is_active,
            "progress": training_round.progress,
            "log_tail": training_round.log_tail,
            "metrics": selectors.round_metrics(training_round=training_round).count(),
        }
    )


@staff_required
def round_curves_png(request: HttpRequest, pk: int) -> HttpResponse:
    training_round = get_object_or_404(TrainingRound, pk=pk)
    return _png(plots.round_curves_png(list(selectors.round_metrics(training_round=training_round))))


@staff_required
def campaign_rounds_png(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    return _png(plots.campaign_rounds_png(list(selectors.rounds_for_campaign(campaign=campaign))))


@staff_required
def campaign_loop_png(request: HttpRequest, pk: int) -> HttpResponse:
    """The plot of the campaign's latest `run_loop` (win rate and KL against round 0, by round)."""
    campaign = get_object_or_404(Campaign, pk=pk)
    path = selectors.loop_report_dir(campaign=campaign) / "loop.png"
    if not path.exists():
        raise Http404("run_loop has not run for this campaign")
    return _png(path.read_bytes())


@staff_required
@require_POST
def round_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    training_round = get_object_or_404(TrainingRound, pk=pk)
    if services.round_cancel(training_round=training_round):
        messages.success(request, f"Round {training_round.number} cancelled.")
    else:
        messages.error(request, f"Round {training_round.number} is not running.")
    return redirect("training:round", pk=pk)

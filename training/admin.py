from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from labeling.admin import action_form_page, campaign_admin_add_actions
from labeling.models import Campaign
from training import selectors, services, tasks
from training.export import AggregationPolicy
from training.forms import RoundConfigForm
from training.models import PreferenceSnapshot, RoundMetric, TrainingRound


@admin.action(description="Export preferences (JSONL snapshot)")
def export_preferences(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
    snapshots = [services.snapshot_create(campaign=campaign) for campaign in queryset]
    links = format_html_join(
        ", ",
        '<a href="{}">{} ({} rows)</a>',
        ((reverse("training-api:snapshot-file", args=[s.pk]), s.campaign.name, s.row_count) for s in snapshots),
    )
    modeladmin.message_user(request, format_html("Exported: {}", links), messages.SUCCESS)


@admin.action(description="Start a DPO round…")
def start_dpo_round(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Campaign]
) -> HttpResponse | None:
    form = RoundConfigForm(request.POST if "apply" in request.POST else None)
    if not form.is_valid():
        count = queryset.count()
        intro = (
            f"Start a DPO round for {count} selected campaign{pluralize(count)}: each trains from its active "
            "policy on its settled preferences, is evaluated on its held-out pairs, and replaces the active "
            "policy only if it passes the gate."
        )
        return action_form_page(
            modeladmin, request, form=form, title="Start a DPO round", intro=intro, submit="Start round",
            template="admin/training/start_round.html",
            evidence=[_evidence(campaign, form) for campaign in queryset.order_by("name")],
        )  # fmt: skip
    started = []
    for campaign in queryset:
        try:
            training_round = services.round_start(campaign=campaign, config=form.config, created_by=request.user)
        except services.RoundAlreadyActive as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
            continue
        started.append(training_round)
        url = reverse("training:round", args=[training_round.pk])
        modeladmin.message_user(
            request, format_html('Queued <a href="{}">{} round {}</a>.', url, campaign.name, training_round.number)
        )
    if len(started) == 1:  # as starting a generation job does: land on what was started
        return HttpResponseRedirect(reverse("training:round", args=[started[0].pk]))
    return None


def _evidence(campaign: Campaign, form: RoundConfigForm) -> tuple[Campaign, dict, dict]:
    """What a round of the campaign would stand on now with the default aggregation, and whether the gate can
    decide on as many held-out pairs as the form asks for (its default, or what the admin typed in a form sent
    back with errors; the page's script follows the field as it changes)."""
    evidence = selectors.round_evidence(
        campaign=campaign, policy=AggregationPolicy(), min_heldout_pairs=_min_heldout_pairs(form)
    )
    table = selectors.evidence_table([("now", evidence)])
    return campaign, table, evidence


def _min_heldout_pairs(form: RoundConfigForm) -> int:
    typed = form.cleaned_data.get("gate_min_heldout_pairs") if form.is_bound else None
    return typed or settings.TRAINING_GATE_MIN_HELDOUT_PAIRS


@admin.action(description="Pick the next batch for humans (by the campaign's pair selection)")
def select_pairs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
    ids = list(queryset.values_list("pk", flat=True))
    for campaign_id in ids:
        transaction.on_commit(lambda campaign_id=campaign_id: tasks.pairs_select.delay(campaign_id))
    modeladmin.message_user(
        request,
        f"Queued: each selected campaign's batch is topped up to {services.SELECTION_BUDGET} pairs "
        "served first (see each comparison's \"selected by\" and policy margin).",
        messages.SUCCESS,
    )


campaign_admin_add_actions(export_preferences, start_dpo_round, select_pairs)


@admin.register(PreferenceSnapshot)
class PreferenceSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "split", "row_count", "short_sha", "download", "created_at"]
    list_filter = ["campaign", "split"]
    readonly_fields = [
        "campaign",
        "split",
        "filters",
        "row_count",
        "sha256",
        "jsonl_path",
        "parquet_path",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # snapshots come from exports, never typed in

    @admin.display(description="sha256")
    def short_sha(self, obj: PreferenceSnapshot) -> str:
        return obj.sha256[:16]

    @admin.display(description="file")
    def download(self, obj: PreferenceSnapshot) -> str:
        return format_html('<a href="{}">download</a>', reverse("training-api:snapshot-file", args=[obj.pk]))


@admin.register(TrainingRound)
class TrainingRoundAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "campaign",
        "number",
        "status",
        "progress_pct",
        "accuracy",
        "output_version",
        "created_at",
    ]
    list_filter = ["status", "campaign"]
    readonly_fields = [
        "campaign",
        "number",
        "status",
        "progress",
        "snapshot",
        "heldout_snapshot",
        "start_version",
        "reference_version",
        "output_version",
        "config",
        "evidence",
        "eval_results",
        "log_tail",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "page",
    ]
    actions = ["cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rounds start from the campaign action, the API or the schedule

    @admin.display(description="progress")
    def progress_pct(self, obj: TrainingRound) -> str:
        return f"{obj.progress:.0%}"

    @admin.display(description="held-out accuracy")
    def accuracy(self, obj: TrainingRound) -> str:
        value = (obj.eval_results or {}).get("accuracy")
        return "–" if value is None else f"{value:.3f}"

    @admin.display(description="round page")
    def page(self, obj: TrainingRound) -> str:
        return format_html('<a href="{}">curves, log and evaluation</a>', reverse("training:round", args=[obj.pk]))

    @admin.action(description="Cancel selected rounds")
    def cancel(self, request: HttpRequest, queryset: QuerySet[TrainingRound]) -> None:
        cancelled = sum(services.round_cancel(training_round=r) for r in queryset)
        self.message_user(request, f"Cancelled {cancelled} of {queryset.count()} rounds.")


@admin.register(RoundMetric)
class RoundMetricAdmin(admin.ModelAdmin):
    list_display = ["round", "step", "epoch", "created_at"]
    list_filter = ["round__campaign"]
    readonly_fields = ["round", "step", "epoch", "values", "created_at"]

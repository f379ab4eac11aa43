import io
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from generation import selectors, services
from generation.models import Completion, GenerationJob, ModelVersion
from generation.options import JobOptionsInput, job_arguments
from labeling.admin import ComparisonAdmin, action_form_page, campaign_admin_add_actions, upload_page
from labeling.forms import PreferenceUploadForm
from labeling.models import Campaign, Comparison


@admin.action(description="Generate pairs")
def generate_pairs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Campaign]):
    """Open the options form, showing how many prompts each selected campaign's job will sample; queue the jobs
    when the admin confirms that count."""
    bound = "apply" in request.POST or "recount" in request.POST
    data = request.POST.copy()
    # An unticked checkbox posts nothing, which DRF reads as the field's default (True):
    # the admin could never turn only-missing off to force a resample.
    data.setdefault("only_missing", "false")
    form = JobOptionsInput(data=data) if bound else JobOptionsInput()
    options = form.validated_data if bound and form.is_valid() else ({} if not bound else None)
    plans, total = [], 0
    if options is not None:
        for campaign in queryset:
            arguments = job_arguments(campaign=campaign, options=dict(options))
            count = selectors.prompts_to_sample(
                campaign=campaign,
                policy=arguments["policy"],
                policy_b=arguments.get("policy_b"),
                only_missing=arguments.get("only_missing", True),
                limit=arguments.get("limit"),
            ).count()
            plans.append({**arguments, "count": count})
            total += count
    confirmed = request.POST.get("confirm_total") == str(total)
    if "apply" in request.POST and options is not None and confirmed:
        try:
            with transaction.atomic():  # all the selected campaigns' jobs, or none
                jobs = [
                    services.generation_job_start(**{k: v for k, v in plan.items() if k != "count"}, created_by=request.user)
                    for plan in plans
                ]
        except ValidationError as exc:
            modeladmin.message_user(request, "; ".join(exc.messages), messages.ERROR)
        else:
            return _jobs_queued(modeladmin, request, jobs)
    return action_form_page(
        modeladmin,
        request,
        form=form,
        title="Generate pairs",
        intro="Two completions per prompt, from each campaign's policy unless you pick one.",
        submit=f"Generate pairs for {total} prompt{'s' if total != 1 else ''}",
        template="admin/generation/generate_pairs.html",
        plans=plans,
        total=total,
        changed="apply" in request.POST and not confirmed,
    )


def _jobs_queued(modeladmin: admin.ModelAdmin, request: HttpRequest, jobs: list[GenerationJob]):
    if len(jobs) == 1:
        return HttpResponseRedirect(reverse("generation:job", args=[jobs[0].pk]))
    links = format_html_join(
        ", ", '<a href="{}">{}</a>', ((reverse("generation:job", args=[j.pk]), j.campaign.name) for j in jobs)
    )
    modeladmin.message_user(request, format_html("Queued {} generation jobs: {}.", len(jobs), links), messages.SUCCESS)
    return None


campaign_admin_add_actions(generate_pairs)


class ComparisonImportAdmin(ComparisonAdmin):
    """labeling's comparison admin with an "Import preferences" page: the import stores completions and
    a policy version, which labeling may not import, so the page is added here."""

    change_list_template = "admin/labeling/comparison/change_list.html"

    def get_urls(self):
        upload = self.admin_site.admin_view(self.upload_view)
        return [path("upload/", upload, name="labeling_comparison_upload"), *super().get_urls()]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        form = PreferenceUploadForm(request.POST or None, request.FILES or None)

        def store(stream: io.TextIOBase, name: str) -> str:
            campaign, use_as = form.cleaned_data["campaign"], form.cleaned_data["use_as"]
            result = services.preferences_import(campaign=campaign, stream=stream, source=name, use_as=use_as)
            self.message_user(request, f"From {name} into {campaign}: {result}.", messages.SUCCESS)
            query = urlencode({"prompt__campaign__id__exact": campaign.pk})
            return f"{reverse('admin:labeling_comparison_changelist')}?{query}"

        return upload_page(
            self,
            request,
            form=form,
            title="Import preferences",
            template="admin/labeling/comparison/upload.html",
            store=store,
        )


admin.site.unregister(Comparison)
admin.site.register(Comparison, ComparisonImportAdmin)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "base_path", "adapter_path", "parent", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "base_path", "adapter_path"]
    raw_id_fields = ["parent"]


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "policy", "policy_b", "status", "phase", "progress_bar", "skipped", "created_at"]
    list_filter = ["status", "campaign"]
    list_select_related = ["campaign", "policy", "policy_b"]
    actions = ["resume", "cancel"]
    fields = [
        "campaign",
        "policy",
        "policy_b",
        "status",
        "phase",
        "progress_bar",
        "done",
        "total",
        "skipped",
        "skipped_identical",
        "duplicates",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "limit",
        "only_missing",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "job_page",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs start from a campaign's "Generate pairs" action, the API or generate_pairs

    @admin.display(description="progress")
    def progress_bar(self, job: GenerationJob) -> str:
        return format_html(
            '<progress max="{}" value="{}"></progress> {} / {}', job.total or 1, job.done, job.done, job.total
        )

    @admin.display(description="live page")
    def job_page(self, job: GenerationJob) -> str:
        return format_html('<a href="{}">Watch job {}</a>', reverse("generation:job", args=[job.pk]), job.pk)

    @admin.action(description="Resume selected jobs (samples only the prompts they still lack)")
    def resume(self, request: HttpRequest, queryset: QuerySet[GenerationJob]) -> None:
        resumed = sum(services.generation_job_resume(job=job) for job in queryset)
        self.message_user(request, f"Queued {resumed} of {queryset.count()} jobs again (finished ones are left alone).")

    @admin.action(description="Cancel selected jobs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[GenerationJob]) -> None:
        cancelled = sum(services.generation_job_cancel(job=job) for job in queryset)
        self.message_user(request, f"Cancelled {cancelled} of {queryset.count()} jobs.")


@admin.register(Completion)
class CompletionAdmin(admin.ModelAdmin):
    list_display = ["id", "short_text", "prompt", "model_version", "backend", "seed", "finish_reason", "is_heldout"]
    list_filter = ["backend", "is_heldout", "finish_reason", "model_version"]
    list_select_related = ["prompt", "model_version"]
    raw_id_fields = ["prompt", "model_version", "job"]
    search_fields = ["text"]

    @admin.display(description="text")
    def short_text(self, obj: Completion) -> str:
        return obj.text if len(obj.text) <= 80 else obj.text[:79] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # completions only come from generation jobs, with their provenance

    def has_change_permission(self, request: HttpRequest, obj: Completion | None = None) -> bool:
        return False  # provenance is a record: never edited

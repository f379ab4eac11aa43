import io
import os
from collections.abc import Callable
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from labeling import authentication, quality, services
from labeling.forms import GoldAnswerForm, HeldoutSplitForm, PromptAdminForm, PromptUploadForm
from labeling.importers import PromptFileError
from labeling.models import Assignment, Campaign, Comparison, Flag, Judgment, Prompt, Tag


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "name", "is_active", "open_to_everyone", "annotations_per_pair", "allow_tie", "allow_both_bad", "gold_rate", "active_policy"
    ]  # fmt: skip
    list_filter = ["is_active", "open_to_everyone"]
    search_fields = ["name"]
    raw_id_fields = ["active_policy"]
    filter_horizontal = ["members", "member_groups"]
    fieldsets = [
        (None, {"fields": ["name", "is_active", "guidelines", "active_policy", "truncate_long_prompts"]}),
        ("Who labels it", {"fields": ["open_to_everyone", "members", "member_groups"]}),
        (
            "Judgments",
            {
                "fields": [
                    "annotations_per_pair",
                    "allow_tie",
                    "allow_both_bad",
                    "strength_scale",
                    "rationale_required",
                    "gold_rate",
                    "lease_seconds",
                ]
            },
        ),
        ("Which pairs humans label first", {"fields": ["pair_selection", "selection_random_share"]}),
    ]


def campaign_admin_add_actions(*actions) -> None:
    """Let apps downstream of labeling (generation, training) add admin actions to campaigns.

    labeling may not import them, so they extend the registered CampaignAdmin instead.
    """
    base = type(admin.site._registry[Campaign])
    extended = type(base.__name__, (base,), {"actions": [*(base.actions or []), *actions]})
    admin.site.unregister(Campaign)
    admin.site.register(Campaign, extended)


def action_form_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    form,
    title: str,
    intro: str,
    submit: str,
    template: str = "admin/action_form.html",
    **extra: object,
) -> HttpResponse:
    """The intermediate page of an admin action that needs a form: it posts the selection back with `apply`.

    A `template` extending admin/action_form.html may fill its `form` block; `extra` goes into its context.
    """
    context = {
        **extra,
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "submit": submit,
        "form": form,
        "action": request.POST["action"],
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        "select_across": request.POST.get("select_across", "0"),
        "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
    }
    return render(request, template, context)


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        return [(t.pk, t.name) for t in Tag.objects.all()[:200]]

    def queryset(self, request, queryset):
        return queryset.filter(tags__pk=self.value()) if self.value() else queryset


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["short_text", "campaign", "split", "enabled", "priority", "tag_list", "source_name", "created"]
    list_filter = ["campaign", "split", "enabled", TagFilter]
    search_fields = ["text", "messages", "external_id"]
    list_select_related = ["campaign"]
    readonly_fields = ["content_hash", "created_at"]
    filter_horizontal = ["tags"]
    actions = ["enable", "disable", "assign_heldout"]
    change_list_template = "admin/labeling/prompt/change_list.html"
    form = PromptAdminForm

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tags")

    def get_fields(self, request: HttpRequest, obj: Prompt | None = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        if obj is not None and obj.messages:
            # A chat prompt's turns come first; its (empty) text field after them.
            fields.remove("messages")
            fields.insert(fields.index("text"), "messages")
        return fields

    def get_list_display(self, request: HttpRequest) -> list[str]:
        # A column that would say the same on every row (the list filtered to one campaign or one
        # file, as after an import) gives its width to the prompt.
        same = {"campaign__id__exact": "campaign", "source": "source_name"}
        return [name for name in self.list_display if name not in {same[k] for k in same if k in request.GET}]

    def save_model(self, request: HttpRequest, obj: Prompt, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "priority" in form.changed_data:
            # The queue orders pairs by their own copy of the priority: keep it in step.
            services.prompts_set_priority(prompts=Prompt.objects.filter(pk=obj.pk), priority=obj.priority)

    @admin.display(description="prompt")
    def short_text(self, obj: Prompt) -> str:
        return obj.display_text[:100]

    @admin.display(description="tags")
    def tag_list(self, obj: Prompt) -> str:
        return ", ".join(t.name for t in obj.tags.all())

    @admin.display(description="source", ordering="source")
    def source_name(self, obj: Prompt) -> str:
        # The column is narrow (the stylesheet ellipsizes a long file name); the whole name is the tooltip.
        return format_html('<span title="{}">{}</span>', obj.source, obj.source)

    @admin.display(description="created at", ordering="created_at")
    def created(self, obj: Prompt) -> str:
        # Compact and sortable by eye; the default "Dec. 2, 2026, 3:15 a.m." wraps onto three lines.
        return date_format(timezone.localtime(obj.created_at), "Y-m-d H:i")

    @admin.action(description="Enable selected prompts")
    def enable(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> None:
        count = services.prompts_set_enabled(prompts=queryset, enabled=True)
        self.message_user(request, f"Enabled {count} prompts.")

    @admin.action(description="Disable selected prompts")
    def disable(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> None:
        count = services.prompts_set_enabled(prompts=queryset, enabled=False)
        self.message_user(request, f"Disabled {count} prompts.")

    @admin.action(description="Split selected prompts into train / held-out…")
    def assign_heldout(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> HttpResponse | None:
        form = HeldoutSplitForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            held = services.prompts_assign_heldout(prompts=queryset, **form.cleaned_data)
            self.message_user(request, f"{held} of {queryset.count()} prompts are now held out.")
            return None
        return action_form_page(
            self,
            request,
            form=form,
            title="Held-out split",
            intro=f"Put a fraction of the {queryset.count()} selected prompts in the held-out split (the rest go "
            "to train). The same seed always gives the same split.",
            submit="Apply split",
        )

    def get_urls(self):
        upload = self.admin_site.admin_view(self.upload_view)
        return [path("upload/", upload, name="labeling_prompt_upload"), *super().get_urls()]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        can_create = request.user.has_perm("labeling.add_campaign")
        form = PromptUploadForm(request.POST or None, request.FILES or None, can_create_campaign=can_create)

        def store(stream: io.TextIOBase, name: str) -> str:
            new = form.new_campaign_settings()
            file_args = {"stream": stream, "source": name, "fmt": form.cleaned_data["format"] or None}
            if new:
                campaign, _, result = services.prompts_import_into_named_campaign(
                    name=form.cleaned_data["new_campaign"], campaign_settings=new, **file_args
                )
            else:
                campaign = form.cleaned_data["campaign"]
                result = services.prompts_import(campaign=campaign, **file_args)
            # Not starting with the file's name: the admin capitalises a message's first letter.
            self.message_user(
                request,
                f"Imported {result.created} prompts from {name} ({result.format}) into "
                f"{'the new campaign ' if new else ''}{campaign}; skipped {result.duplicates} duplicates.",
                messages.SUCCESS,
            )
            warning = services.prompts_over_context_warning(campaign=campaign, source=name, result=result)
            if warning:
                self.message_user(request, f"Warning: {warning}.", messages.WARNING)
            # Land on the prompts of this file (the import stores its name as their source).
            query = urlencode({"campaign__id__exact": campaign.pk, "source": name[:255]})
            return f"{reverse('admin:labeling_prompt_changelist')}?{query}"

        return upload_page(
            self, request, form=form, title="Import prompts", template="admin/labeling/prompt/upload.html", store=store
        )


def upload_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    form: forms.Form,
    title: str,
    template: str,
    store: Callable[[io.TextIOBase, str], str],
) -> HttpResponse:
    """An admin page that imports a file uploaded through `form` whole or not at all.

    `store(text stream, file name)` imports it and returns the URL to land on; a PromptFileError
    lists the file's bad lines (line, field, problem) above the form instead.
    """
    if not modeladmin.has_add_permission(request):
        return HttpResponse(status=403)
    refused: PromptFileError | None = None
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        name = os.path.basename(upload.name)
        # surrogateescape: a byte that is not UTF-8 is reported by line and field (labeling.importers).
        stream = io.TextIOWrapper(upload.file, encoding="utf-8", errors="surrogateescape", newline="")
        try:
            return HttpResponseRedirect(store(stream, name))
        except PromptFileError as exc:
            refused = exc
            lines = f"{exc.count} bad line{'s' if exc.count != 1 else ''}"
            form.add_error("file", f"Nothing was imported: {name} has {lines} (listed above).")
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "refused": refused,
        "opts": modeladmin.model._meta,
    }
    return render(request, template, context)


class JudgmentInline(admin.TabularInline):
    model = Judgment
    extra = 0
    fields = ["annotator", "source", "choice", "strength", "left_is_a", "time_ms", "created_at"]
    readonly_fields = fields
    can_delete = False


def _excerpt(text: str, length: int = 80) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = [
        "id", "prompt_text", "text_a", "text_b", "status", "judgments_count", "is_gold", "gold_choice",
        "selected_by", "policy_margin", "policy_entropy",
    ]  # fmt: skip
    list_filter = ["status", "is_gold", "selected_by", "prompt__campaign"]
    list_select_related = ["prompt", "completion_a", "completion_b"]
    search_fields = ["prompt__text", "completion_a__text", "completion_b__text"]
    raw_id_fields = ["prompt", "completion_a", "completion_b"]
    readonly_fields = ["side_by_side", "selected_by", "policy_margin", "policy_entropy", "selection_rank"]
    fields = [
        "side_by_side", "prompt", "completion_a", "completion_b", "is_gold", "gold_choice", "status", "priority",
        "selected_by", "policy_margin", "policy_entropy", "selection_rank",
    ]  # fmt: skip
    inlines = [JudgmentInline]
    actions = ["mark_gold"]

    @admin.display(description="prompt")
    def prompt_text(self, obj: Comparison) -> str:
        return _excerpt(obj.prompt.display_text)

    @admin.display(description="A")
    def text_a(self, obj: Comparison) -> str:
        return _excerpt(obj.completion_a.text)

    @admin.display(description="B")
    def text_b(self, obj: Comparison) -> str:
        return _excerpt(obj.completion_b.text)

    @admin.display(description="The pair")
    def side_by_side(self, obj: Comparison) -> str:
        # format_html escapes every argument: model output shows as text, never as markup.
        cell = '<td style="vertical-align:top;white-space:pre-wrap;width:50%">{}</td>'
        return format_html(
            '<p style="white-space:pre-wrap">{}</p><table style="width:100%"><tr><th>A</th><th>B</th></tr><tr>'
            + cell
            + cell
            + "</tr></table>",
            obj.prompt.display_text,
            obj.completion_a.text,
            obj.completion_b.text,
        )

    @admin.action(description="Mark selected pairs as gold…")
    def mark_gold(self, request: HttpRequest, queryset: QuerySet[Comparison]) -> HttpResponse | None:
        form = GoldAnswerForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            count = services.comparisons_mark_gold(comparisons=queryset, **form.cleaned_data)
            self.message_user(request, f"{count} pairs are now gold with answer {form.cleaned_data['gold_choice']}.")
            return None
        return action_form_page(
            self,
            request,
            form=form,
            title="Mark as gold",
            intro=f"Make the {queryset.count()} selected pairs gold: annotators are scored against this answer, "
            "and the pairs are mixed into work at the campaign's gold rate.",
            submit="Mark as gold",
        )


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "state", "left_is_a", "leased_until"]
    list_filter = ["state"]
    raw_id_fields = ["comparison", "annotator"]


class JudgmentAnnotatorFilter(admin.SimpleListFilter):
    """By the annotator's username: each annotator's line on the campaign dashboard links here."""

    title = "annotator"
    parameter_name = "annotator"

    def lookups(self, request, model_admin):
        names = model_admin.get_queryset(request).order_by().values_list("annotator__username", flat=True).distinct()
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        return queryset.filter(annotator__username=self.value()) if self.value() else queryset


class JudgmentChangeList(ChangeList):
    """The judgments page, each with how probable its answer is its pair's truth (quality.answer_posteriors)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        posteriors = quality.answer_posteriors(self.result_list)
        for judgment in self.result_list:
            judgment.answer_posterior = posteriors[judgment.pk]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = [
        "id", "comparison", "annotator", "source", "choice", "left_is_a", "answer_is_truth", "strength", "time_ms",
        "created_at",
    ]  # fmt: skip
    list_filter = ["source", "choice", "comparison__prompt__campaign", JudgmentAnnotatorFilter]
    list_select_related = ["comparison__prompt", "annotator"]
    raw_id_fields = ["assignment", "comparison", "annotator"]

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return JudgmentChangeList

    @admin.display(description="P(answer is the truth)")
    def answer_is_truth(self, judgment: Judgment) -> str:
        """Under the reliability fit of the campaign's judgments from the same source: low where co-annotators and
        gold say otherwise."""
        posterior = getattr(judgment, "answer_posterior", None)
        return "–" if posterior is None else f"{posterior:.3f}"


admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    """DRF's token admin, issuing keys tied to the user's password like the token endpoint does."""

    def save_model(self, request: HttpRequest, obj: TokenProxy, form, change: bool) -> None:
        if not change:
            obj.key = authentication.token_key(user=obj.user)
        super().save_model(request, obj, form, change)


class FlagOpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    """Annotators' flags: read them, then resolve them (retiring the pair when it should not be judged)."""

    list_display = ["id", "prompt_text", "reason", "note", "annotator", "created_at", "resolved_at", "resolved_by"]
    list_filter = [FlagOpenFilter, "reason", "comparison__prompt__campaign"]
    list_select_related = ["comparison__prompt", "annotator", "resolved_by"]
    search_fields = ["note", "annotator__username"]
    readonly_fields = ["comparison", "annotator", "reason", "note", "created_at", "resolved_at", "resolved_by"]
    actions = ["resolve", "retire_and_resolve"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="prompt")
    def prompt_text(self, obj: Flag) -> str:
        return obj.comparison.prompt.display_text[:100]

    @admin.action(description="Resolve selected flags (the pairs stay in the queue)")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Flag]) -> None:
        count = services.flags_resolve(flags=queryset, by=request.user)
        self.message_user(request, f"Resolved {count} flags.")

    @admin.action(description="Retire the flagged pairs and resolve the flags")
    def retire_and_resolve(self, request: HttpRequest, queryset: QuerySet[Flag]) -> None:
        count = services.flags_resolve(flags=queryset, by=request.user, retire=True)
        self.message_user(request, f"Retired the pairs of {count} flags and resolved them.")

"""Staff-only API: start a generation job, read its status (the job page polls the latter)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from generation import selectors, services
from generation.models import GenerationJob, GenerationSkip
from generation.options import JobOptionsInput, job_arguments
from labeling.models import Campaign

SKIPS_SHOWN = 200  # the job page lists this many skipped prompts; the count covers them all


class JobStartInput(JobOptionsInput):
    campaign = serializers.PrimaryKeyRelatedField(queryset=Campaign.objects.all())


class SkipOutput(serializers.ModelSerializer):
    class Meta:
        model = GenerationSkip
        fields = ["prompt", "reason"]


class JobOutput(serializers.ModelSerializer):
    campaign = serializers.CharField(source="campaign.name")
    policy = serializers.CharField(source="policy.name")
    policy_b = serializers.CharField(source="policy_b.name", default=None, allow_null=True)
    status_label = serializers.CharField(source="get_status_display")
    phase_label = serializers.CharField(source="get_phase_display")
    progress = serializers.FloatField()
    sampled = serializers.SerializerMethodField()
    error_summary = serializers.CharField()
    skips = serializers.SerializerMethodField()
    finished = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "campaign",
            "policy",
            "policy_b",
            "status",
            "status_label",
            "finished",
            "phase",
            "phase_label",
            "sampled",
            "done",
            "total",
            "progress",
            "skipped_identical",
            "skipped",
            "skips",
            "duplicates",
            "error",
            "error_summary",
            "temperature",
            "top_p",
            "max_tokens",
            "seed",
            "limit",
            "only_missing",
            "created_at",
            "started_at",
            "finished_at",
            "page_url",
        ]

    def get_sampled(self, job: GenerationJob) -> int:
        return selectors.job_sampled(job=job)

    @extend_schema_field(SkipOutput(many=True))
    def get_skips(self, job: GenerationJob) -> list[dict]:
        return SkipOutput(job.skips.all()[:SKIPS_SHOWN], many=True).data

    def get_finished(self, job: GenerationJob) -> bool:
        return job.status in services.FINISHED_STATES

    def get_page_url(self, job: GenerationJob) -> str:
        return reverse("generation:job", args=[job.pk])


class JobStartApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=JobStartInput, responses={201: JobOutput})
    def post(self, request: Request) -> Response:
        data = JobStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        campaign = fields.pop("campaign")
        try:
            job = services.generation_job_start(
                **job_arguments(campaign=campaign, options=fields), created_by=request.user
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return Response(JobOutput(job).data, status=status.HTTP_201_CREATED)


class JobDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=JobOutput)
    def get(self, request: Request, pk: int) -> Response:
        job = get_object_or_404(GenerationJob.objects.select_related("campaign", "policy", "policy_b"), pk=pk)
        return Response(JobOutput(job).data)

"""Staff-only API: start a generation job, read its status (the job page polls the latter)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from generation import services
from generation.models import GenerationJob, ModelVersion, ModelVersionStatus
from labeling.models import Campaign


class JobStartInput(serializers.Serializer):
    campaign = serializers.PrimaryKeyRelatedField(queryset=Campaign.objects.all())
    policy = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.filter(status=ModelVersionStatus.READY),
        required=False,
        allow_null=True,
        help_text="Default: the campaign's active policy (the base model if it has none).",
    )
    policy_b = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.filter(status=ModelVersionStatus.READY),
        required=False,
        allow_null=True,
        help_text="For an A/B job: side b is sampled from this policy.",
    )
    limit = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    seed = serializers.IntegerField(min_value=0, default=0)
    temperature = serializers.FloatField(min_value=0.0, default=1.0)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, default=1.0)
    max_tokens = serializers.IntegerField(min_value=1, default=128)

    def validate_top_p(self, value: float) -> float:
        if value == 0:
            raise serializers.ValidationError("top_p must be above 0.")
        return value


class JobOutput(serializers.ModelSerializer):
    campaign = serializers.CharField(source="campaign.name")
    policy = serializers.CharField(source="policy.name")
    policy_b = serializers.CharField(source="policy_b.name", default=None)
    status_label = serializers.CharField(source="get_status_display")
    progress = serializers.FloatField()
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
            "done",
            "total",
            "progress",
            "skipped_identical",
            "error",
            "temperature",
            "top_p",
            "max_tokens",
            "seed",
            "limit",
            "created_at",
            "started_at",
            "finished_at",
            "page_url",
        ]

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
        fields = data.validated_data
        campaign = fields.pop("campaign")
        policy = fields.pop("policy", None) or services.campaign_policy_next(campaign=campaign)
        try:
            job = services.generation_job_start(campaign=campaign, policy=policy, created_by=request.user, **fields)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return Response(JobOutput(job).data, status=status.HTTP_201_CREATED)


class JobDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=JobOutput)
    def get(self, request: Request, pk: int) -> Response:
        job = get_object_or_404(GenerationJob.objects.select_related("campaign", "policy", "policy_b"), pk=pk)
        return Response(JobOutput(job).data)

"""Staff-only API: preference snapshots (create, download) and DPO rounds (start, watch, cancel)."""

from pathlib import Path
from typing import Any

from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import DetailSerializer
from labeling.models import Campaign
from training import leaderboard, selectors, services
from training.config import RoundConfig
from training.export import FORMATS, PROMPT_FORMATS, SPLITS, AggregationPolicy
from training.models import PreferenceSnapshot, TrainingRound


class SnapshotInput(serializers.Serializer):
    campaign = serializers.PrimaryKeyRelatedField(queryset=Campaign.objects.all())
    split = serializers.ChoiceField(choices=SPLITS, default="train")
    format = serializers.ChoiceField(choices=FORMATS, default="jsonl")
    prompt_format = serializers.ChoiceField(choices=PROMPT_FORMATS, default="chat")
    aggregation = serializers.DictField(required=False, default=dict)

    def validate_aggregation(self, value: dict) -> AggregationPolicy:
        try:
            return AggregationPolicy.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise serializers.ValidationError(str(exc)) from None


class SnapshotOutput(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = PreferenceSnapshot
        fields = ["id", "campaign", "split", "filters", "row_count", "sha256", "created_at", "download_url"]

    def get_download_url(self, obj: PreferenceSnapshot) -> str:
        return reverse("training-api:snapshot-file", args=[obj.pk])


class SnapshotCreateApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=SnapshotInput, responses={201: SnapshotOutput}, summary="Staff: export preferences to a snapshot"
    )
    def post(self, request: Request) -> Response:
        data = SnapshotInput(data=request.data)
        data.is_valid(raise_exception=True)
        snapshot = services.snapshot_create(
            campaign=data.validated_data["campaign"],
            split=data.validated_data["split"],
            policy=data.validated_data["aggregation"],
            fmt=data.validated_data["format"],
            prompt_format=data.validated_data["prompt_format"],
        )
        return Response(SnapshotOutput(snapshot).data, status=status.HTTP_201_CREATED)


class SnapshotDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=SnapshotOutput, summary="Staff: a snapshot's metadata")
    def get(self, request: Request, pk: int) -> Response:
        return Response(SnapshotOutput(get_object_or_404(PreferenceSnapshot, pk=pk)).data)


class SnapshotFileApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
        summary="Staff: download a snapshot (JSONL or Parquet; sha256 in X-Snapshot-Sha256)",
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        snapshot = get_object_or_404(PreferenceSnapshot, pk=pk)
        path = Path(snapshot.jsonl_path or snapshot.parquet_path)
        if not path.is_file():
            raise Http404("the snapshot's file is gone from the artifacts folder")
        response = FileResponse(path.open("rb"), as_attachment=True, filename=f"{snapshot.campaign.name}-{path.name}")
        response["X-Snapshot-Sha256"] = snapshot.sha256
        response["X-Row-Count"] = str(snapshot.row_count)
        return response


class RoundStartInput(serializers.Serializer):
    campaign = serializers.PrimaryKeyRelatedField(queryset=Campaign.objects.all())
    config = serializers.DictField(required=False, default=dict)

    def validate_config(self, value: dict) -> RoundConfig:
        try:
            return RoundConfig.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise serializers.ValidationError(str(exc)) from None


class RoundOutput(serializers.ModelSerializer):
    class Meta:
        model = TrainingRound
        fields = [
            "id",
            "campaign",
            "number",
            "status",
            "progress",
            "config",
            "snapshot",
            "heldout_snapshot",
            "start_version",
            "reference_version",
            "output_version",
            "evidence",
            "eval_results",
            "error",
            "log_tail",
            "created_at",
            "started_at",
            "finished_at",
        ]


class RoundStartApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=RoundStartInput,
        responses={201: RoundOutput, 409: OpenApiResponse(DetailSerializer, description="A round is already queued or running.")},
        summary="Staff: start a DPO round",
    )
    def post(self, request: Request) -> Response:
        data = RoundStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            training_round = services.round_start(
                campaign=data.validated_data["campaign"], config=data.validated_data["config"], created_by=request.user
            )
        except services.RoundAlreadyActive as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(RoundOutput(training_round).data, status=status.HTTP_201_CREATED)


class RoundDetailOutput(RoundOutput):
    metrics = serializers.SerializerMethodField(help_text="The training curve: {step, epoch, <metric>: value} per step.")

    class Meta(RoundOutput.Meta):
        fields = [*RoundOutput.Meta.fields, "metrics"]

    def get_metrics(self, training_round: TrainingRound) -> list[dict[str, Any]]:
        return [
            {"step": m.step, "epoch": m.epoch, **m.values}
            for m in selectors.round_metrics(training_round=training_round)
        ]


class RoundDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=RoundDetailOutput, summary="Staff: a round's state, evaluation and training curve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(RoundDetailOutput(get_object_or_404(TrainingRound, pk=pk)).data)


class RoundCancelApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        responses={200: RoundOutput, 409: OpenApiResponse(DetailSerializer, description="The round is not active.")},
        summary="Staff: cancel a round",
    )
    def post(self, request: Request, pk: int) -> Response:
        training_round = get_object_or_404(TrainingRound, pk=pk)
        if not services.round_cancel(training_round=training_round):
            return Response(
                {"detail": f"round is {training_round.status}, not active"}, status=status.HTTP_409_CONFLICT
            )
        training_round.refresh_from_db()
        return Response(RoundOutput(training_round).data)


class RatingOutput(serializers.Serializer):
    version_id = serializers.IntegerField()
    name = serializers.CharField()
    rating = serializers.FloatField(help_text="Elo-like: 400 points is 10:1 odds; the campaign's first policy is 1000.")
    lower = serializers.FloatField(help_text="95% bootstrap interval, low end.")
    upper = serializers.FloatField(help_text="95% bootstrap interval, high end.")
    games = serializers.IntegerField(help_text="Human A/B judgments this policy took part in.")
    wins = serializers.FloatField(help_text="Of them, won (a tie or both-bad counts half).")


class UnratedOutput(serializers.Serializer):
    version_id = serializers.IntegerField()
    name = serializers.CharField()


class AnchorOutput(serializers.Serializer):
    version_id = serializers.IntegerField()
    rating = serializers.FloatField()


class LeaderboardOutput(serializers.Serializer):
    anchor = AnchorOutput(allow_null=True, help_text="The policy pinned at 1000 (null: nothing rated yet).")
    judgments = serializers.IntegerField(help_text="Human A/B judgments the fit used.")
    sources = serializers.ListField(child=serializers.CharField())
    ties = serializers.CharField()
    bootstrap_rounds = serializers.IntegerField()
    ratings = RatingOutput(many=True)
    unrated = UnratedOutput(many=True, help_text="Policies of the campaign with no A/B judgment yet.")


class LeaderboardApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        responses=LeaderboardOutput,
        summary="Staff: every policy of a campaign on one Bradley-Terry scale, from human A/B judgments",
    )
    def get(self, request: Request, pk: int) -> Response:
        campaign = get_object_or_404(Campaign, pk=pk)
        return Response(LeaderboardOutput(leaderboard.campaign_leaderboard(campaign=campaign)).data)

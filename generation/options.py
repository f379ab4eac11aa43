"""A generation job's options: one definition that the API, the admin's "Generate pairs" form and
`generate_pairs` all validate with, and the one place that fills in the default policy."""

from typing import Any

from django.db.backends.base.operations import BaseDatabaseOperations
from rest_framework import serializers
from rest_framework.fields import empty

from generation import services
from generation.models import ModelVersion, ModelVersionStatus
from labeling.models import Campaign

# The columns' ranges (PositiveIntegerField, BigIntegerField): a larger number would fail in the database.
_POSITIVE_INT_MAX = BaseDatabaseOperations.integer_field_ranges["PositiveIntegerField"][1]
_BIG_INT_MAX = BaseDatabaseOperations.integer_field_ranges["BigIntegerField"][1]


class JobOptionsInput(serializers.Serializer):
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
    limit = serializers.IntegerField(min_value=1, max_value=_POSITIVE_INT_MAX, required=False, allow_null=True, help_text="At most this many prompts.")
    temperature = serializers.FloatField(min_value=0.0, default=1.0)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, default=1.0)
    max_tokens = serializers.IntegerField(min_value=1, max_value=_POSITIVE_INT_MAX, default=128)
    seed = serializers.IntegerField(
        min_value=0, max_value=_BIG_INT_MAX, required=False, allow_null=True, help_text="Default: a fresh seed, recorded on the job."
    )
    only_missing = serializers.BooleanField(
        default=True,
        help_text="Only prompts with no open or settled pair from this policy (or A/B pair); "
        "off: sample every enabled prompt again.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # An empty form shows the values a job takes when they are left alone (DRF shows a
        # field's `initial`, which is not its default): 1.0, 128, and only-missing ticked.
        for field in self.fields.values():
            if field.default is not empty:
                field.initial = field.default

    def validate_top_p(self, value: float) -> float:
        if value == 0:
            raise serializers.ValidationError("top_p must be above 0.")
        return value


def job_arguments(*, campaign: Campaign, options: dict[str, Any]) -> dict[str, Any]:
    """generation_job_create's keyword arguments for `campaign` from validated options (the default policy filled in)."""
    policy = options.get("policy") or services.campaign_policy_next(campaign=campaign)
    return {**options, "campaign": campaign, "policy": policy}

from django.db import transaction

from generation.models import ModelVersion
from labeling import services as labeling_services
from labeling.models import Campaign


def model_version_register(
    *, name: str, base_path: str, adapter_path: str = "", parent: ModelVersion | None = None
) -> ModelVersion:
    """Register a servable policy (idempotent by name: the same name returns the same row)."""
    version, _ = ModelVersion.objects.get_or_create(
        name=name, defaults={"base_path": base_path, "adapter_path": adapter_path, "parent": parent}
    )
    return version


@transaction.atomic
def campaign_ensure_policy(*, campaign: Campaign, base_path: str) -> ModelVersion:
    """The campaign's active policy, registering `base_path` as its first one if it has none."""
    if campaign.active_policy_id:
        return campaign.active_policy
    version = model_version_register(name=f"base:{base_path}", base_path=base_path)
    labeling_services.campaign_set_active_policy(campaign=campaign, policy_id=version.pk)
    return version

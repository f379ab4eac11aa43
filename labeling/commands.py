"""What the project's management commands share."""

from django.core.management.base import CommandError

from labeling.models import Campaign


def campaign_named(name: str) -> Campaign:
    """The campaign called `name`, or a CommandError saying there is none."""
    try:
        return Campaign.objects.get(name=name)
    except Campaign.DoesNotExist:
        raise CommandError(f"no campaign named {name!r}") from None

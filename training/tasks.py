from celery import shared_task
from django.conf import settings

from training import services


@shared_task
def round_run(round_id: int) -> str | None:
    """Run one DPO round (routed to the `training` queue); a redelivered message finds it claimed and stops."""
    training_round = services.round_execute(round_id=round_id)
    return training_round.status if training_round else None


@shared_task
def retrain_due_campaigns(min_new_preferences: int | None = None) -> list[int]:
    """Celery beat's entry point (the schedule is a django-celery-beat PeriodicTask, editable in the admin)."""
    threshold = settings.RETRAIN_MIN_NEW_PREFERENCES if min_new_preferences is None else min_new_preferences
    return [r.pk for r in services.retrain_due_campaigns(min_new_preferences=threshold)]

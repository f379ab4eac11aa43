from pathlib import Path

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from labeling.models import Campaign
from training import runner, services


def _warm_up() -> None:
    if not settings.TRAINING_LAUNCHER:
        runner.warm_start(cwd=Path(settings.BASE_DIR))


@shared_task(bind=True)
def round_run(self, round_id: int) -> str | None:
    """Run one DPO round (routed to the `training` queue); a redelivered message finds it claimed and stops."""
    training_round = services.round_execute(round_id=round_id)
    if not self.request.is_eager:
        _warm_up()  # for the next round, once this one no longer needs the CPU
    return training_round.status if training_round else None


@worker_ready.connect
def _warm_up_training_worker(sender, **kwargs) -> None:
    consumer = getattr(sender, "task_consumer", None)
    if consumer is not None and "training" in {queue.name for queue in consumer.queues}:
        _warm_up()


@worker_shutdown.connect
def _stop_warm_worker(**kwargs) -> None:
    runner.warm_stop()


@shared_task
def retrain_due_campaigns(min_new_preferences: int | None = None) -> list[int]:
    """Celery beat's entry point (the schedule is a django-celery-beat PeriodicTask, editable in the admin)."""
    threshold = settings.RETRAIN_MIN_NEW_PREFERENCES if min_new_preferences is None else min_new_preferences
    return [r.pk for r in services.retrain_due_campaigns(min_new_preferences=threshold)]


@shared_task
def pairs_select(campaign_id: int, budget: int | None = None) -> int:
    """Top up a campaign's batch of human work (routed to the `training` queue: scoring loads the policy)."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        return 0
    return len(services.pairs_score_and_select(campaign=campaign, budget=budget or services.SELECTION_BUDGET))

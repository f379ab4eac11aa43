"""The retraining schedule, as a django-celery-beat row: edit its interval (or disable it) in the admin."""

from django.db import migrations

TASK_NAME = "Retrain campaigns with enough new preferences"


def create_schedule(apps, schema_editor) -> None:
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_10_min, _ = IntervalSchedule.objects.get_or_create(every=10, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "training.tasks.retrain_due_campaigns",
            "interval": every_10_min,
            "description": "Starts a DPO round for each active campaign with at least RETRAIN_MIN_NEW_PREFERENCES "
            "new aggregated preferences since its last round and no round running; pass "
            '{"min_new_preferences": N} as keyword arguments to override the setting.',
        },
    )


def delete_schedule(apps, schema_editor) -> None:
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0002_round_start_version_created_by"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]

from django.conf import settings
from django.db import migrations, models


SIMULATED_GROUP = "simulated annotators"  # labeling.services.SIMULATED_GROUP when this migration was written


def mark_simulated(apps, schema_editor) -> None:
    """Judgments stored before sources existed by the scripted annotators (accounts `sim-<campaign>-<i>`,
    rationale "simulated", as the simulation harness wrote them) are simulated, and their accounts are marked."""
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Group = apps.get_model("auth", "Group")
    Judgment = apps.get_model("labeling", "Judgment")
    scripted = Judgment.objects.filter(annotator__username__startswith="sim-", rationale="simulated")
    users = User.objects.filter(pk__in=scripted.values("annotator_id"))
    if users.exists():
        group, _ = Group.objects.get_or_create(name=SIMULATED_GROUP)
        group.user_set.add(*users)
    scripted.update(source="simulated")


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0006_flag'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.AddField(
            model_name='judgment',
            name='source',
            field=models.CharField(choices=[('human', 'Human'), ('simulated', 'Simulated (a scripted annotator)'), ('imported', 'Imported (an existing preference data set)')], default='human', max_length=10),
        ),
        migrations.AddConstraint(
            model_name='judgment',
            constraint=models.CheckConstraint(condition=models.Q(('source__in', ['human', 'simulated', 'imported'])), name='judgment_source_valid'),
        ),
        migrations.RunPython(mark_simulated, migrations.RunPython.noop),
    ]

import hashlib

from django.db import migrations, models

BATCH = 2000


def backfill(apps, schema_editor):
    """Every existing pair gets the digest of its two texts, as labeling.models.pair_digest computes it
    (spelled out here: a migration keeps the rule it was written with)."""
    Comparison = apps.get_model("labeling", "Comparison")
    rows = Comparison.objects.filter(texts_digest="").values_list("pk", "completion_a__text", "completion_b__text")
    batch = []
    for pk, text_a, text_b in rows.iterator(chunk_size=BATCH):
        a, b = sorted(" ".join(text.split()) for text in (text_a, text_b))
        batch.append(Comparison(pk=pk, texts_digest=hashlib.sha256(f"{len(a)}:{a}{b}".encode()).hexdigest()[:32]))
        if len(batch) == BATCH:
            Comparison.objects.bulk_update(batch, ["texts_digest"])
            batch = []
    Comparison.objects.bulk_update(batch, ["texts_digest"])


class Migration(migrations.Migration):
    """A pair's texts digest: the duplicate check of generation and imports reads these keys instead of
    every earlier pair's two texts (on a prompt resampled many times, most of a chunk's storing)."""

    dependencies = [("labeling", "0010_comparison_fillfactor")]

    operations = [
        migrations.AddField(
            model_name="comparison",
            name="texts_digest",
            field=models.CharField(
                default="",
                editable=False,
                help_text="pair_digest of the two answers' texts (set on save when empty).",
                max_length=32,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]

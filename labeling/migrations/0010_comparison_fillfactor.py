from django.db import migrations


def set_fillfactor(percent: int):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return  # SQLite has no fillfactor
        table = schema_editor.quote_name(apps.get_model("labeling", "Comparison")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(percent)})")

    return run


class Migration(migrations.Migration):
    """Leave room on each page of the comparison table so a judgment's count update is a HOT update.

    A pair is updated once per judgment (judgments_count). On full pages each update wrote a new
    row version with new entries in every index, the work queue's among them; the entries left
    behind at the head of the queue stayed until vacuum (a page that keeps changing gets no
    dead-entry hints), and every claim walked them. On a page with room, the new version stays on the
    page and no index changes. Pages written before this keep their fill until rewritten
    (VACUUM FULL or CLUSTER labeling_comparison)."""

    dependencies = [("labeling", "0009_assignment_lease_indexes")]

    operations = [migrations.RunPython(set_fillfactor(80), set_fillfactor(100))]

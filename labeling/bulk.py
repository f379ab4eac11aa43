"""Many new rows of one model in one INSERT ... RETURNING per batch, without the ORM's per-value work.

`bulk_create` builds a model instance per row and prepares every value through its
field, about 4 µs a value: for a chunk of generated pairs (two completions of 12
columns and a comparison each) that was most of the storing thread's CPU, and that
thread shares the interpreter with the engine's stepping. Here each row is a tuple
of the values the database driver takes as they are (ints, strings, floats, bools,
None; `json_value` for a JSON column), every other column gets its field's default,
prepared once per call, and `auto_now`/`auto_now_add` columns the time of the call.
As with `bulk_create`, nothing is validated here beyond the database's constraints.
"""

from collections.abc import Sequence

from django.db import connection
from django.db.models import Model
from django.utils import timezone


def json_value(value: object) -> object:
    """A JSON column's value as the connection's driver takes it."""
    return connection.ops.adapt_json_value(value, None)


def insert(model: type[Model], *, columns: Sequence[str], rows: Sequence[tuple]) -> list[int]:
    """Insert `rows` (values in the order of `columns`, field names) and return their new primary keys, in order."""
    if not rows:
        return []
    ops, meta = connection.ops, model._meta
    given = [meta.get_field(name) for name in columns]
    rest = [f for f in meta.concrete_fields if f not in given and not f.primary_key]
    now = timezone.now()
    constants = tuple(
        ops.adapt_datetimefield_value(now)
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
        else f.get_db_prep_save(f.get_default(), connection)
        for f in rest
    )
    fields = given + rest
    names = ", ".join(ops.quote_name(f.column) for f in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    size = ops.bulk_batch_size(fields, rows)
    pks: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            cursor.execute(
                f"INSERT INTO {ops.quote_name(meta.db_table)} ({names}) VALUES {', '.join([row_sql] * len(batch))}"
                f" RETURNING {ops.quote_name(meta.pk.column)}",
                [value for row in batch for value in (*row, *constants)],
            )
            pks.extend(pk for (pk,) in cursor.fetchall())
    return pks

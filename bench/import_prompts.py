"""Import N prompts from JSONL, re-import them, and import a file with one bad line.

    .venv/bin/python bench/import_prompts.py [--lines 50000] [--database-url postgres://...]

Runs in a throwaway database (a temporary SQLite file unless --database-url names
one, which must be empty). Prints one JSON line last.
"""

import argparse
import json
import os
import secrets
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--bad-line", type=int, default=777)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    os.environ["VAR_DIR"] = str(work)
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{work / 'db.sqlite3'}"
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))  # a deployment's DATABASE_URL needs one
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import CommandError, call_command
    from django.db import connection

    from labeling.models import Prompt

    call_command("migrate", verbosity=0)
    rng = random.Random(0)
    words = "alpha beta gamma delta kite river moon garden bread chess".split()
    good, bad = work / "prompts.jsonl", work / "bad.jsonl"
    with good.open("w") as f:
        for i in range(args.lines):
            text = f"Prompt {i}: " + " ".join(rng.choice(words) for _ in range(20))
            f.write(json.dumps({"prompt": text, "tags": [rng.choice(words)], "id": i}) + "\n")
    lines = good.read_text().splitlines(keepends=True)
    lines[args.bad_line - 1] = '{"prompt": 5}\n'
    bad.write_text("".join(lines))

    started = time.perf_counter()
    call_command("import_prompts", str(good), campaign="bench")
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    call_command("import_prompts", str(good), campaign="bench", quiet=True)
    reimport_s = time.perf_counter() - started
    stored_after_reimport = Prompt.objects.count()
    try:
        call_command("import_prompts", str(bad), campaign="bench-bad", quiet=True)
        bad_error = ""
    except CommandError as exc:
        bad_error = str(exc)
    print(
        json.dumps(
            {
                "database": connection.vendor,
                "lines": args.lines,
                "import_s": round(import_s, 2),
                "lines_per_s": round(args.lines / import_s),
                "reimport_s": round(reimport_s, 2),
                "reimport_added": stored_after_reimport - args.lines,
                "bad_file_stored": Prompt.objects.filter(campaign__name="bench-bad").count(),
                "bad_file_names_line": f"line {args.bad_line}:" in bad_error,
            }
        )
    )


if __name__ == "__main__":
    main()

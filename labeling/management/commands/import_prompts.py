from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling import services
from labeling.importers import FORMATS, PromptFileError


class Command(BaseCommand):
    help = (
        "Import prompts into a campaign (created if missing) from JSONL (prompt or messages), CSV (prompt column) "
        "or HH-RLHF JSONL (chosen/rejected). A file with any bad line is rejected whole; duplicates are skipped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--format", choices=FORMATS, help="Default: csv for *.csv, else jsonl (HH rows detected).")
        parser.add_argument("--quiet", action="store_true", help="No progress bar.")

    def handle(self, *args, file: Path, campaign: str, format: str | None, quiet: bool, **options) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            # surrogateescape: a byte that is not UTF-8 is reported by line and field (importers.parse).
            with file.open(encoding="utf-8", errors="surrogateescape", newline="") as stream:
                target, created, result = services.prompts_import_into_named_campaign(
                    name=campaign,
                    stream=stream,
                    source=str(file),
                    fmt=format,
                    size=file.stat().st_size,
                    progress=not quiet,
                )
        except PromptFileError as exc:
            raise CommandError(f"nothing was imported: {exc}") from None
        if created:
            self.stdout.write(f"created campaign {campaign!r}")
        self.stdout.write(self.style.SUCCESS(f"{file.name} ({result.format}): {result}"))
        warning = services.prompts_over_context_warning(campaign=target, source=file.name, result=result)
        if warning:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))

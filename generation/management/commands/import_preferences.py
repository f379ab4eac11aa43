from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from generation import services
from labeling import services as labeling_services
from labeling.importers import PREFERENCE_USES, PromptFileError


class Command(BaseCommand):
    help = (
        "Import judged pairs into a campaign (created if missing) from a JSONL preference file: HH-RLHF "
        "(chosen/rejected transcripts) or TRL (prompt/chosen/rejected, strings or chat; or chosen/rejected "
        "conversations with an implicit prompt). Each pair gets one judgment of source 'imported'. A file with "
        "any bad line is rejected whole; pairs the campaign already has are skipped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument(
            "--use-as",
            choices=PREFERENCE_USES,
            default=PREFERENCE_USES[0],
            help="train: training data (default); heldout: held-out evaluation pairs; gold: gold pairs.",
        )

    def handle(self, *args, file: Path, campaign: str, use_as: str, **options) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            # One transaction: a rejected file doesn't even leave a new, empty campaign behind.
            # surrogateescape: a byte that is not UTF-8 is reported by line and field (importers).
            with transaction.atomic(), file.open(encoding="utf-8", errors="surrogateescape", newline="") as stream:
                target, created = labeling_services.campaign_get_or_create(name=campaign)
                result = services.preferences_import(campaign=target, stream=stream, source=str(file), use_as=use_as)
        except PromptFileError as exc:
            raise CommandError(f"nothing was imported: {exc}") from None
        if created:
            self.stdout.write(f"created campaign {campaign!r}")
        self.stdout.write(self.style.SUCCESS(f"{file.name}: {result}"))

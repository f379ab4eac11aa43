from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from generation import tiny_model


class Command(BaseCommand):
    help = "Build the bundled tiny Llama model (offline, deterministic) for the generator and DPO rounds."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--out", type=Path, default=settings.TINY_MODEL_DIR)
        parser.add_argument("--force", action="store_true", help="Rebuild even if the same recipe is there.")

    def handle(self, *args, out: Path, force: bool, **options) -> None:
        if tiny_model.is_built(out) and not force:
            self.stdout.write(f"tiny model already built at {out}")
            return
        tiny_model.build(out, force=force, progress=True)
        self.stdout.write(self.style.SUCCESS(f"tiny model written to {out}"))

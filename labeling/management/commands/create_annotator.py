import secrets

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling import services


class Command(BaseCommand):
    help = "Create an annotator (a non-staff user in the annotators group), or reset an existing one's password."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", help="Default: a random one, printed.")
        parser.add_argument("--email", default="")

    def handle(self, *args, username: str, password: str | None, email: str, **options) -> None:
        password = password or secrets.token_urlsafe(12)
        try:
            services.annotator_create(username=username, password=password, email=email)
        except ValidationError as exc:
            raise CommandError(f"password for {username} refused: {' '.join(exc.messages)}") from None
        self.stdout.write(self.style.SUCCESS(f"annotator {username} / {password}"))

from pathlib import Path

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from generation import services as generation_services
from labeling import services as labeling_services

DEMO_PROMPTS = Path(__file__).resolve().parents[2] / "demo" / "prompts.jsonl"
GUIDELINES = """\
Pick the answer a thoughtful person would rather receive.

* **Helpful**: it does what the prompt asks (a story is a story, tips are tips).
* **Clear**: short sentences, no repetition, no gibberish.
* **Tie** only when you truly can't choose; **both bad** when neither is acceptable.
"""


class Command(BaseCommand):
    help = "Load the demo: a campaign with prompts, POLICY_MODEL (smollm2 under `make run`) as its policy, a demo admin and annotator."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", default="demo")
        parser.add_argument("--admin-password", default="admin-demo-pass")
        parser.add_argument("--annotator-password", default="annotator-demo-pass")

    def handle(self, *args, campaign: str, admin_password: str, annotator_password: str, **options) -> None:
        try:
            with transaction.atomic():
                admin, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
                admin.is_staff = admin.is_superuser = True
                labeling_services.user_set_password(user=admin, password=admin_password)
                labeling_services.annotator_create(username="annotator", password=annotator_password)
        except ValidationError as exc:
            raise CommandError(f"demo password refused: {' '.join(exc.messages)}") from None
        demo, _ = labeling_services.campaign_get_or_create(
            name=campaign, guidelines=GUIDELINES, annotations_per_pair=1, gold_rate=0.0
        )
        with DEMO_PROMPTS.open(encoding="utf-8") as stream:
            result = labeling_services.prompts_import(campaign=demo, stream=stream, source=str(DEMO_PROMPTS))
        heldout = labeling_services.prompts_assign_heldout(prompts=demo.prompts.all(), fraction=0.2, seed=0)
        policy = generation_services.campaign_policy_next(campaign=demo)

        self.stdout.write(f"campaign {demo.name!r}: {result}; {heldout} held out; policy {policy.name}")
        self.stdout.write(self.style.SUCCESS("Log in with:"))
        self.stdout.write(f"  admin:     admin / {admin_password}")
        self.stdout.write(f"  annotator: annotator / {annotator_password}")

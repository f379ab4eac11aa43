from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from generation import services
from generation.models import GenerationJob, ModelVersion
from labeling.models import Campaign


def _policy(name: str) -> ModelVersion:
    try:
        return ModelVersion.objects.get(name=name)
    except ModelVersion.DoesNotExist:
        raise CommandError(f"no model version named {name!r}") from None


class Command(BaseCommand):
    help = (
        "Sample y1/y2 pairs for a campaign's enabled prompts. Queues a job for the generation worker, "
        "or with --wait runs it here with a progress bar (no worker needed)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--limit", type=int, help="At most this many prompts.")
        parser.add_argument("--policy", help="ModelVersion name (default: the campaign's active policy).")
        parser.add_argument("--policy-b", help="ModelVersion name for side b: an A/B job against --policy.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--temperature", type=float, default=1.0)
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--max-tokens", type=int, default=128)
        parser.add_argument("--wait", action="store_true", help="Run the job in this process and wait for it.")

    def handle(self, *args, campaign: str, policy: str | None, policy_b: str | None, wait: bool, **options) -> None:
        try:
            target = Campaign.objects.get(name=campaign)
        except Campaign.DoesNotExist:
            raise CommandError(f"no campaign named {campaign!r}") from None
        if policy:
            version = _policy(policy)
        else:
            version = services.campaign_policy_next(campaign=target)
        job_args = {
            "campaign": target,
            "policy": version,
            "policy_b": _policy(policy_b) if policy_b else None,
            "limit": options["limit"],
            "seed": options["seed"],
            "temperature": options["temperature"],
            "top_p": options["top_p"],
            "max_tokens": options["max_tokens"],
        }
        try:
            # --wait runs here rather than enqueueing and polling: it then works
            # with no worker running, and a crash leaves a resumable job.
            job = (services.generation_job_create if wait else services.generation_job_start)(**job_args)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if not wait:
            self.stdout.write(f"queued generation job {job.pk} for {target.name} (policy {version.name})")
            return
        with tqdm(desc=f"job {job.pk}", unit="prompt") as bar:

            def show(current: GenerationJob) -> None:
                bar.total = current.total
                bar.n = current.done
                bar.set_postfix(skipped=current.skipped_identical)
                bar.refresh()

            job = services.generation_job_run(job=job, on_progress=show)
        self.stdout.write(
            self.style.SUCCESS(
                f"job {job.pk} {job.status}: {job.done} prompts, {job.done - job.skipped_identical} pairs, "
                f"{job.skipped_identical} skipped as identical"
            )
        )

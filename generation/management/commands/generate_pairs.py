from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from generation import services
from generation.models import GenerationJob, ModelVersion
from generation.options import JobOptionsInput, job_arguments
from labeling.commands import campaign_named


def _policy(name: str) -> int:
    try:
        return ModelVersion.objects.get(name=name).pk
    except ModelVersion.DoesNotExist:
        raise CommandError(f"no model version named {name!r}") from None


class Command(BaseCommand):
    help = (
        "Sample y1/y2 pairs for a campaign's enabled prompts that have no pair from the policy yet. Queues a job for "
        "the generation workers, or with --wait runs it here with a progress bar (no worker needed)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--limit", type=int, help="At most this many prompts.")
        parser.add_argument("--policy", help="ModelVersion name (default: the campaign's active policy).")
        parser.add_argument("--policy-b", help="ModelVersion name for side b: an A/B job against --policy.")
        parser.add_argument("--seed", type=int, help="Default: a fresh seed, recorded on the job.")
        parser.add_argument("--temperature", type=float, default=1.0)
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--max-tokens", type=int, default=128)
        parser.add_argument(
            "--resample", action="store_true", help="Sample every enabled prompt, even those already paired."
        )
        parser.add_argument("--wait", action="store_true", help="Run the job in this process and wait for it.")

    def handle(self, *args, campaign: str, policy: str | None, policy_b: str | None, wait: bool, **options) -> None:
        target = campaign_named(campaign)
        form = JobOptionsInput(
            data={
                "policy": _policy(policy) if policy else None,
                "policy_b": _policy(policy_b) if policy_b else None,
                "limit": options["limit"],
                "seed": options["seed"],
                "temperature": options["temperature"],
                "top_p": options["top_p"],
                "max_tokens": options["max_tokens"],
                "only_missing": not options["resample"],
            }
        )
        if not form.is_valid():
            raise CommandError(
                "; ".join(f"--{field.replace('_', '-')}: {' '.join(errors)}" for field, errors in form.errors.items())
            )
        job_args = job_arguments(campaign=target, options=dict(form.validated_data))
        try:
            # --wait runs here rather than enqueueing and polling: it then works
            # with no worker running, and a crash leaves a resumable job.
            job = (services.generation_job_create if wait else services.generation_job_start)(**job_args)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if not wait:
            self.stdout.write(
                f"queued generation job {job.pk} for {target.name} (policy {job.policy.name}): "
                f"{job.total} prompts in {job.shards.count()} shards"
            )
            return
        with tqdm(desc=f"job {job.pk}", unit="prompt") as bar:

            def show(current: GenerationJob) -> None:
                bar.total = current.total
                bar.n = current.done
                bar.set_postfix(skipped=current.skipped, identical=current.skipped_identical)
                bar.refresh()

            job = services.generation_job_run(job=job, on_progress=show)
        pairs = job.done - job.skipped - job.skipped_identical - job.duplicates
        self.stdout.write(
            self.style.SUCCESS(
                f"job {job.pk} {job.status}: {job.done} prompts, {pairs} pairs, {job.skipped} skipped "
                f"(see the job page), {job.skipped_identical} identical, {job.duplicates} duplicates"
            )
        )

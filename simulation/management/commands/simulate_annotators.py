from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from generation import services as generation_services
from labeling import services as labeling_services
from labeling.commands import campaign_named
from simulation import annotators as annotators_module
from simulation import oracles


class Command(BaseCommand):
    help = (
        "K scripted annotators (marked simulated) label through the HTTP API (token login, next, submit), "
        "choosing by an oracle. By default they work on a scratch copy of the campaign (its prompts and "
        "policy, with fresh pairs sampled for it), so the human queue and figures stay untouched; "
        "--in-place writes into the campaign itself. Without --url the app is served in-process on a free port."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--annotators", type=int, default=3)
        parser.add_argument(
            "--oracle", required=True, help=f"{', '.join(oracles.BUILTIN)} or package.module:function"
        )
        parser.add_argument("--noise", type=float, default=0.0, help="Share of answers flipped (0-1).")
        parser.add_argument(
            "--noisy-crowd",
            action="store_true",
            help="Plant bad annotators instead: a quarter of them flip their answer with probability 0.4 and one "
            "more always picks the left side (the label efficiency bench's crowd); they stand out on the dashboard "
            "when pairs are judged more than once (the campaign's annotations per pair).",
        )
        parser.add_argument("--url", help="A running server, e.g. http://127.0.0.1:8000.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--password", default="simulated-annotator-pass")
        parser.add_argument("--max-tokens", type=int, default=64, help="Completion length for the scratch copy's pairs.")
        parser.add_argument(
            "--in-place",
            action="store_true",
            help="Confirmation: judge the campaign's own pairs, taking them from its human queue "
            "(the judgments are stored as simulated).",
        )

    def handle(self, *args, campaign: str, annotators: int, oracle: str, noise: float, url: str | None,
               seed: int, password: str, in_place: bool, max_tokens: int, noisy_crowd: bool, **options) -> None:
        if annotators < 1:
            raise CommandError("--annotators must be at least 1")
        if not 0.0 <= noise <= 1.0:
            raise CommandError("--noise must be between 0 and 1")
        if noisy_crowd and noise:
            raise CommandError("--noisy-crowd plants its own noise: leave --noise out")
        try:
            behaviours = annotators_module.noisy_crowd(annotators) if noisy_crowd else None
        except ValueError as exc:
            raise CommandError(f"--noisy-crowd: {exc}") from None
        try:
            choose = oracles.resolve(oracle)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        target = campaign_named(campaign)
        if not in_place:
            target = labeling_services.campaign_copy_scratch(campaign=target)
            policy = generation_services.campaign_policy_next(campaign=target)
            job = generation_services.generation_job_create(
                campaign=target, policy=policy, seed=seed, max_tokens=max_tokens
            )
            generation_services.generation_job_run(job=job)
            self.stdout.write(f"scratch campaign {target.name!r}: {job.done} pairs sampled from {policy.name}")
        credentials = annotators_module.annotators_ensure(
            campaign=target, prefix=f"sim-{target.pk}", count=annotators, password=password
        )
        server = nullcontext(url) if url else annotators_module.serve_in_thread()
        try:
            with server as base_url:
                result = annotators_module.simulate(
                    base_url=base_url,
                    campaign=target.name,
                    credentials=credentials,
                    oracle=choose,
                    noise=noise,
                    behaviours=behaviours,
                    seed=seed,
                )
        except (annotators_module.SimulationError, OSError) as exc:
            raise CommandError(str(exc)) from None
        if behaviours and target.annotations_per_pair < 2:
            self.stdout.write(
                self.style.WARNING(
                    f"{target.name!r} takes one judgment per pair: no two annotators share a pair, so the dashboard "
                    "cannot tell the planted ones apart (set its annotations per pair to 3, then run this again)"
                )
            )
        per = ", ".join(f"{name}: {count}" for name, count in sorted(result.by_annotator.items()))
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.judgments} simulated judgments stored in {target.name!r} ({per}); "
                f"{result.expired} leases expired"
            )
        )

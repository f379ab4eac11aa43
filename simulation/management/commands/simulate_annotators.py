from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from labeling import oracles, simulation


class Command(BaseCommand):
    help = (
        "K scripted annotators label a campaign through the HTTP API (token login, next, submit), "
        "choosing by an oracle. Without --url the app is served in-process on a free port."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--annotators", type=int, default=3)
        parser.add_argument(
            "--oracle", required=True, help=f"{', '.join(oracles.BUILTIN)} or package.module:function"
        )
        parser.add_argument("--noise", type=float, default=0.0, help="Share of answers flipped (0-1).")
        parser.add_argument("--url", help="A running server, e.g. http://127.0.0.1:8000.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--password", default="simulated-annotator-pass")

    def handle(self, *args, campaign: str, annotators: int, oracle: str, noise: float, url: str | None,
               seed: int, password: str, **options) -> None:
        if annotators < 1:
            raise CommandError("--annotators must be at least 1")
        if not 0.0 <= noise <= 1.0:
            raise CommandError("--noise must be between 0 and 1")
        try:
            choose = oracles.resolve(oracle)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        credentials = simulation.annotators_ensure(prefix=f"sim-{campaign}", count=annotators, password=password)
        server = nullcontext(url) if url else simulation.serve_in_thread()
        try:
            with server as base_url:
                result = simulation.simulate(
                    base_url=base_url, campaign=campaign, credentials=credentials, oracle=choose, noise=noise, seed=seed
                )
        except (simulation.SimulationError, OSError) as exc:
            raise CommandError(str(exc)) from None
        per = ", ".join(f"{name}: {count}" for name, count in sorted(result.by_annotator.items()))
        self.stdout.write(self.style.SUCCESS(f"{result.judgments} judgments stored ({per}); {result.expired} leases expired"))

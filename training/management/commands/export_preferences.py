from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling.commands import campaign_named
from labeling.models import JudgmentSource
from training import services
from training.config import WINNERS
from training.export import FORMATS, PROMPT_FORMATS, SPLITS, AggregationPolicy


class Command(BaseCommand):
    help = (
        "Export a campaign's aggregated judgments as (prompt, chosen, rejected) rows for TRL, and record the snapshot."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--out", required=True, type=Path, help="File to write.")
        parser.add_argument("--split", choices=SPLITS, default="train")
        parser.add_argument(
            "--prompt-format",
            choices=PROMPT_FORMATS,
            default="chat",
            help="chat: message lists, as the generator conditioned on them (default); "
            "auto: plain strings for plain prompts unless the export holds a chat prompt.",
        )
        parser.add_argument("--min-judgments", type=int, default=AggregationPolicy.min_judgments)
        parser.add_argument("--min-agreement", type=float, default=AggregationPolicy.min_agreement)
        parser.add_argument("--keep-ties", action="store_true", help="Tie votes abstain instead of dropping the pair.")
        parser.add_argument(
            "--keep-both-bad", action="store_true", help="Both-bad votes abstain instead of dropping the pair."
        )
        parser.add_argument(
            "--winner",
            choices=WINNERS,
            default=AggregationPolicy.winner,
            help="Which side a kept pair chooses: the votes' (default), or the one the annotators' reliability model "
            "finds likelier better (posterior).",
        )
        parser.add_argument("--include-gold", action="store_true")
        parser.add_argument(
            "--include-unsettled",
            action="store_true",
            help="Also export pairs that do not have all of their campaign's N judgments yet "
            "(a later vote may still flip their majority).",
        )
        parser.add_argument(
            "--sources",
            default=",".join(AggregationPolicy.sources),
            help=f"Comma-separated judgment sources that vote: {', '.join(JudgmentSource.values)} (default: human).",
        )

    def handle(self, *args, **options) -> None:
        campaign = campaign_named(options["campaign"])
        try:
            policy = AggregationPolicy(
                min_judgments=options["min_judgments"],
                min_agreement=options["min_agreement"],
                drop_ties=not options["keep_ties"],
                drop_both_bad=not options["keep_both_bad"],
                include_gold=options["include_gold"],
                settled_only=not options["include_unsettled"],
                sources=tuple(s.strip() for s in options["sources"].split(",") if s.strip()),
                winner=options["winner"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        snapshot = services.snapshot_create(
            campaign=campaign,
            split=options["split"],
            policy=policy,
            fmt=options["format"],
            prompt_format=options["prompt_format"],
            path=options["out"],
            progress=options["verbosity"] > 0,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"snapshot {snapshot.pk}: {snapshot.row_count} rows, sha256 {snapshot.sha256} -> {options['out']}"
            )
        )

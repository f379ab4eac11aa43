from django.core.management.base import BaseCommand, CommandError

from labeling.commands import campaign_named
from training import services


class Command(BaseCommand):
    help = (
        "Pick the next batch of human work among the campaign's unjudged pairs, by its pair_selection setting: "
        "random, or by its active policy's scores, the pairs it is least sure of (uncertainty) or most sure of among "
        "the prompts it is least sure how to answer (certainty), plus a random share. Picked pairs are served first."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument(
            "--budget", type=int, default=services.SELECTION_BUDGET, help="Open picked pairs to top the batch up to."
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options) -> None:
        campaign = campaign_named(options["campaign"])
        if options["budget"] < 0:
            raise CommandError("--budget must be at least 0")
        picks = services.pairs_score_and_select(campaign=campaign, budget=options["budget"], seed=options["seed"])
        by = {why: sum(1 for w in picks.values() if w == why) for why in sorted(set(picks.values()))}
        self.stdout.write(f"picked {len(picks)} pairs ({campaign.pair_selection}): {by}")

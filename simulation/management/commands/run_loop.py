from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling import services as labeling_services
from labeling.commands import campaign_named
from simulation import loop, oracles
from training import selectors
from training.config import REFERENCES, RoundConfig


class Command(BaseCommand):
    help = (
        "Close the loop unattended: R rounds of generate → simulated annotators (over HTTP) → DPO → promote, "
        "then every round's policy against round 0 on held-out prompts: a table, loop.json and loop.png. "
        "Runs on a scratch copy of the campaign (its prompts and policy) unless --in-place."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--oracle", required=True, help=f"{', '.join(oracles.BUILTIN)} or package.module:function")
        parser.add_argument("--annotators", type=int, default=4)
        parser.add_argument("--noise", type=float, default=0.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-tokens", type=int, default=64)
        parser.add_argument("--eval-samples", type=int, default=8, help="Samples per held-out prompt when scoring.")
        parser.add_argument("--labels-per-round", type=int, help="Pairs sampled (and labeled) per round; default: all prompts.")
        parser.add_argument("--beta", type=float, default=0.1)
        # The loop's defaults are bench/loop.py's (measured to improve the tiny model within 3 rounds);
        # a round started from the admin keeps RoundConfig's gentler ones.
        parser.add_argument("--learning-rate", type=float, default=2e-3)
        parser.add_argument("--epochs", type=float, default=2.0)
        # Every round retrains on every settled pair so far: regularised toward round 0, old pairs are already
        # won and the per-round KL budget bounds the total drift (bench/loop.py's docstring has the numbers).
        parser.add_argument("--reference", choices=REFERENCES, default="initial",
                            help="The policy each round is regularised toward: round 0 (initial) or the round before.")
        parser.add_argument("--gate", type=float, help="Held-out accuracy a round needs (default TRAINING_GATE_MIN_ACCURACY).")
        parser.add_argument("--gate-tolerance", type=float, default=0.05,
                            help="A round may trail the last promoted round's held-out accuracy by this much.")
        parser.add_argument(
            "--min-heldout-pairs",
            type=int,
            help="Held-out pairs a round needs to be evaluated (default TRAINING_GATE_MIN_HELDOUT_PAIRS).",
        )
        parser.add_argument("--kl-budget", type=float, help="Per-round KL budget in nats (default TRAINING_KL_BUDGET).")
        parser.add_argument(
            "--in-place",
            action="store_true",
            help="Confirmation: generate, judge and train in the campaign itself, taking its pairs from the human "
            "queue (the judgments are stored as simulated).",
        )
        parser.add_argument("--out", type=Path, help="Default: ARTIFACTS_DIR/loop/campaign-<id> (shown on the rounds page).")

    def handle(self, *args, **o) -> None:
        campaign = campaign_named(o["campaign"])
        if o["rounds"] < 1:
            raise CommandError("--rounds must be at least 1")
        try:
            oracle = oracles.resolve(o["oracle"])
            round_config = RoundConfig(
                beta=o["beta"],
                learning_rate=o["learning_rate"],
                epochs=o["epochs"],
                reference=o["reference"],
                seed=o["seed"],
                gate_min_accuracy=o["gate"],
                gate_tolerance=o["gate_tolerance"],
                gate_min_heldout_pairs=o["min_heldout_pairs"],
                kl_budget=o["kl_budget"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        config = loop.LoopSettings(
            annotators=o["annotators"],
            noise=o["noise"],
            seed=o["seed"],
            max_tokens=o["max_tokens"],
            eval_samples=o["eval_samples"],
            prompts_per_round=o["labels_per_round"],
            round_config=round_config,
        )
        if not o["in_place"]:
            campaign = labeling_services.campaign_copy_scratch(campaign=campaign)
            self.stdout.write(f"working on the scratch campaign {campaign.name!r}")
        report = loop.loop_run(campaign=campaign, rounds=o["rounds"], oracle=oracle, oracle_name=o["oracle"], config=config)
        out = o["out"] or selectors.loop_report_dir(campaign=campaign)
        json_path, png_path = loop.report_write(report=report, out_dir=out)
        self.stdout.write(f"{'round':>5}  {'status':<10} {'win rate vs 0':<22} {'KL to 0':>8} {'length':>7}  version")
        for r in report.rounds:
            interval = f"{r.win_rate:.3f} [{r.win_low:.2f}, {r.win_high:.2f}]"
            self.stdout.write(f"{r.round:>5}  {r.status:<10} {interval:<22} {r.kl:>8.3f} {r.mean_length:>7.1f}  {r.version}")
        self.stdout.write(self.style.SUCCESS(f"wrote {json_path} and {png_path}"))

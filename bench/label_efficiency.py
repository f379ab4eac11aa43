"""Label efficiency: does active pair selection reach a win rate on fewer human labels, and does the
reliability pipeline keep it when some annotators are bad?

    .venv/bin/python bench/label_efficiency.py [--oracle positive] [--rounds 3] [--budget 150] [--seeds 3]
        [--seed 0] [--prompts N] [--candidates N] [--annotations-per-pair 3] [--flip 0.4] [--min-posterior 0.6]
        [--posterior-smoothing] [--selections random,uncertainty[,certainty]]
        [--gate-min-pairs N] [--gate-min-accuracy X] [--gate-tolerance X]
        (and bench/loop.py's loop options: --policy, --annotators, --learning-rate, ...)

bench/loop.py's closed loop (simulation.loop.loop_run, the same campaign, rounds and scoring), with a
fixed human-label budget per round: each round samples `--candidates` training pairs (default three
times the pairs the budget buys) from the active policy, the campaign's pair selection picks
budget // annotations-per-pair of them (labeling.selection), and the simulated annotators, over the
HTTP API, stop after `--budget` judgments. The held-out pairs (the gate's evidence, the same prompts
for every condition) are labeled in full on top of the budget.

Per seed, three runs per selection (six at the default two), each its own campaign in one throwaway SQLite database:
- random/clean and uncertainty/clean: every annotator answers as the oracle does;
- {random, uncertainty}/noisy/majority: a noisy crowd (simulation.annotators.noisy_crowd: a quarter of
  the annotators flip their answer with probability `--flip`, one always picks the left side), rounds
  trained on the plain majority of each pair's votes;
- {random, uncertainty}/noisy/reliability: the same crowd, rounds trained through the reliability
  pipeline: each pair's chosen side is the one labeling.reliability's Dawid-Skene fit favours
  (AggregationPolicy.winner "posterior"), pairs whose posterior is under `--min-posterior` dropped from
  training and from the gate's held-out evidence (RoundConfig.min_posterior); with `--posterior-smoothing`,
  the rest also trained with per-pair label smoothing 1 - posterior (RoundConfig.posterior_smoothing,
  training/confidence_dpo.py). Off by default: see "Measured".
The six runs of a seed share their random numbers: the same prompts and held-out set, the same samples
from the same policy, and one random order of the candidates for both selection modes (labeling.selection).
Round 0's policy is its own reference, so every margin is 0 and uncertainty's first batch goes by the
policy's predictive entropy at each prompt (labeling.selection); later batches by margin and entropy, weighed
by how often each pair's truth was a side. A clean and a noisy run of one mode pick the same first batch and
differ by its labels.

Prints a JSON line per seed as it ends, and one JSON line last: per run, the mean over seeds of
`win_rates` (vs round 0 on held-out prompts, round 0 first), `labels_used` (training-pair judgments stored
before each round's training, cumulative, round 0 first: 0) and `kl` (to round 0), with every seed's win
rates and statuses; the summary, of those mean curves; and `by_seed`, each seed's own summary:
- `labels_ratio_uncertainty_vs_random`: the labels uncertainty/clean needed to reach random/clean's
  final win rate, over the labels random/clean used. The labels needed are read off uncertainty's
  (labels_used, win rate) points by linear interpolation between the two rounds around the first
  round at or above the target; null when no round reaches it, or when random/clean ended no better
  than its round 0 (no target to reach).
- `noisy_drop_majority`, `noisy_drop_reliability`: the final win rate lost against the clean run of
  the same selection mode, the worse of the two modes (each mode's in `noisy_drop_by_selection`).
Bars (issue 15): ratio <= 0.6; noisy_drop_reliability <= 0.03 and below noisy_drop_majority.
One seed decides nothing here (see below: whether the gate passes a round near its bounds moves a run's
final win rate by 0.1 to 0.3), hence three by default.

Measured, on 2 cores. A run's curves depend on the CPU's arithmetic: the same seed gave other curves on
EPYC cores than on Xeon cores with AMX (bfloat16 in hardware); on one machine they repeat exactly, but for
the noisy majority runs, whose simulated annotators work in threads (who judges which pair depends on timing).

Xeon with AMX, the defaults (`--oracle positive`, three seeds), selection by margin and the policy's entropy
at the prompt: 2,332 s wall, 2,612 s CPU (about 870 s CPU a seed; a few minutes of it beside a test run);
ratio 0.621 (bar 0.6: not met, by 0.021); `noisy_drop_reliability` 0.0 (bar met), `noisy_drop_majority` 0.132.
- mean win rates by round: random/clean 0.5, 0.560, 0.560, 0.632 (statuses Pgg, ggg, ggP by seed);
  uncertainty/clean 0.5, 0.554, 0.644, 0.714 (gPP, PPP, ggg). Uncertainty reaches random's final 0.632 at
  280 of random's 450 labels. Per seed: seed 0 0.821 against 0.679 (ratio 0.60), seed 1 0.820 against 0.5
  (random promoted nothing), seed 2 0.5 against 0.716 (uncertainty promoted nothing).
- What changed is which pairs the labels buy: uncertainty's picks were 64-82% decisive (judgments that pick
  a side; seed 0's over its first two rounds) against random's 38-56%, because the first model, whose margins are all 0, asks about the prompts
  where its entropy is highest (78-83 words a pair against 55-60), and those are the pairs the oracle
  decides. Its chosen answer was the longer one as often as random's (65-67% against 70-77%).
- Its rounds also move the policy further (round-1 KL 0.81-1.58 against 0.72-0.94). On seed 2 that was no
  gain: round 1 held-out accuracy 0.494 against random's 0.588, and every round gated.
- The reliability runs are their clean run round for round on every seed, both modes (the same gate
  figures and win rates); majority's drop per seed 0.321, 0.075, 0.216 (its worse mode).
- Seeds 3-5 (`--seed 3 --seeds 3`, same code and machine, 1,667 s wall, 1,632 s CPU) undo the gain: ratio null
  (random's mean curve ended higher). Final win rates uncertainty against random: seed 3 0.768 against 0.735
  (ratio 0.959), seed 4 0.743 against 0.797, seed 5 0.729 against 0.884. Over the six seeds the modes are even
  (mean final 0.730 against 0.719): the entropy buys more decisive judgments on every seed, not better rounds.
  Reliability drop 0.0 on every seed again; majority's 0.268, 0.297, 0.159.
- `--oracle gloomy` (a taste the loop was not tuned for), three seeds: 1,657 s wall, 1,672 s CPU. The gate
  held all 54 rounds (ratio null, drops 0.0: nothing told apart), as before the entropy (35 of 36 then).
  Uncertainty's picks were 70-73% decisive against random's 51-59%; its rounds' held-out accuracy was
  0.47-0.57 (random's 0.48-0.58), under the gate's bound: the tiny model learns this taste too slowly
  for three rounds of 150 labels to show a difference.
Round 1 alone with the gate open (every candidate promoted unless over its KL budget; eight seeds, positive, clean
annotators, the same machine; a throwaway script, about 45 s an arm): mean oracle win rate against round 0 of
random at 150 labels 0.678, uncertainty at 150 0.695, random at 300 0.709 (training pairs 19.5, 33.0, 38.4:
uncertainty's batches are decisive). Uncertainty was above random at 150 on 7 of 8 seeds, worth about 230 of
random's labels (ratio about 0.65 for one round). Every one of the 24 candidates beat round 0 (0.60-0.74), yet
their length-controlled held-out accuracy, the gate's evidence, was 0.49-0.78 and did not follow the win rate
(uncertainty's mean 0.582 against random's 0.623): at n of 70-85 the gate promotes by lottery, and in the loop
that lottery, not the labels, decides the ratio.
EPYC, the loop with the gate open (`--seeds 2 --gate-min-accuracy 0 --gate-tolerance 1 --gate-min-pairs 1`: only
the KL budget left; every one of the 36 rounds promoted; 5,097 s wall, 4,954 s CPU, beside a test run): selection
bought nothing. Mean win rates random/clean 0.5, 0.587, 0.681, 0.804; uncertainty/clean 0.5, 0.584, 0.676, 0.766
(ratio null on both seeds: seed 0 0.811 against 0.817, seed 1 0.722 against 0.792), at about twice the KL (final
7.6 against 4.1 nats). With the gate out of the way the loop's ratio is still above the bar: the gate is not the
only thing between uncertainty selection and it. Reliability drop 0.0 on both seeds, majority's 0.052.
Defaults on EPYC, seed 0 alone: ratio 0.815; drops reliability 0.0, majority 0.050.
Again on EPYC (seed 0, `--selections random,uncertainty`), the worker's KL budget estimated at the end of training
(final weights first) against the code before it (an estimate at each point while training), the two run side by
side: the same win rates and KL, round for round, in every clean and reliability run (ratio 0.815 both, as above;
the noisy majority runs differ, as their threads do); 2,199 s wall, 2,076 s CPU against 2,263 s and 2,143 s.
EPYC, `--selections random,certainty`, seed 0 alone (seed 1 was stopped unfinished; about 70 min wall beside CI):
labels_ratio_certainty_vs_random 0.296: certainty/clean 0.5, 0.665, 0.704, 0.823 (all three rounds promoted)
against random/clean 0.5, 0.646, 0.646, 0.646 (promoted, gated, gated). One seed, and the gate decided it again:
it says nothing yet. Reliability drop 0.0 in both modes; majority's 0.146 (random), 0.138 (certainty).
Xeon with AMX, `--selections random,uncertainty,certainty`, three seeds, alone: 3,124 s wall, 3,325 s CPU (about
123 s CPU a loop). random and uncertainty repeated the first Xeon figures above exactly (ratio 0.621). Certainty:
ratio 0.611 (bar 0.6: not met either); mean win rates 0.5, 0.554, 0.648, 0.704 against uncertainty's 0.5, 0.554,
0.644, 0.714. The two modes pick the same pairs until a round is promoted (every margin is 0 before), so they
parted only after one: seed 0 0.823 against 0.821 (ratio 0.60 both), seed 1 0.788 against 0.820 (random promoted
nothing), seed 2 0.5 both (round 1 gated, then the same batches again). Reliability drop 0.0 in every mode;
majority's 0.132 (its worse mode, random). EPYC's seed-0 ratio of 0.296 was the gate's verdicts on that machine.
Seeds 3-5, `--selections random,certainty` (1,947 s wall, 2,041 s CPU): random repeated its earlier curves, and
certainty ended where uncertainty had on each seed (0.768, 0.743, 0.729 against random's 0.735, 0.797, 0.884;
ratio null). Over the six seeds: mean final win rate certainty 0.725, uncertainty 0.730, random 0.719.
Before the entropy (same machine, same defaults; 1,731 s wall, 1,785 s CPU): the ratio was 1.0, uncertainty/clean
being random/clean on every seed (0.5, 0.560, 0.560, 0.632): with every margin 0 until a promoted round, both
modes picked the same pairs, and they parted only on seed 0. Reliability drop 0.0, majority 0.132.
`--prompts 1000`, seed 0 (n=143 decisive held-out pairs at round 1; 1,252 s wall): 6 of 12 clean and
reliability rounds promoted (4 of 12 at 500 prompts); ratio null (uncertainty's round 3 gated).
EPYC, `--posterior-smoothing` (then the default), three seeds, positive: 3,602 s wall, 4,393 s CPU; ratio 0.93;
drops: majority 0.144, reliability 0.068. Every row the reliability runs exported was the oracle's side (about
2,000 rows; majority's were 6-12% wrong): smoothing right labels by 1 - posterior only nudged round 1's policy,
and the loop carried that into other samples and other gate verdicts (up to 0.187 on a seed), hence off.

What earlier versions taught, for whoever tunes this bench:
- At loop.py's fifth held out, the gate never had its 50 decisive held-out pairs (most tiny-model pairs tie
  under the built-in oracles: 59 of 96 under positive): every round "not evaluated". Two fifths give ~75.
- Whether the gate passes a round near its bounds moves a run's final win rate by 0.1 to 0.3, more than
  selection or aggregation do: one seed decides nothing, hence three by default.
- Least |margin| first filled uncertainty's batches with the oracle's ties (a tie trains nothing): pairs are
  weighed by P(decisive | |margin|, entropy) since.
- Read raw, a noisy crowd taught selection that tied pairs were decisive (a left-clicker never says tie):
  the fit reads each judged pair's Dawid-Skene truth since.
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loop as loop_bench  # noqa: E402
from labeling.selection import MODES, RANDOM  # noqa: E402  (Django-free)

SELECTIONS = ("random", "uncertainty")  # the two modes: the default --selections
SEEDS = 3  # seeds per run by default (see the module's docstring)
HELDOUT_SHARE = 0.4  # the least share of prompts held out (see main)
AGGREGATIONS = ("majority", "reliability")  # the noisy crowd's


def runs_of(selections: Sequence[str]) -> list[tuple[str, str, str]]:
    """(selection, crowd, aggregation) of every run, the clean ones first: a run's name is these joined by "/"
    (clean runs have one aggregation)."""
    return [
        *((selection, "clean", "") for selection in selections),
        *((selection, "noisy", aggregation) for selection in selections for aggregation in AGGREGATIONS),
    ]


def run_name(selection: str, crowd: str, aggregation: str) -> str:
    return "/".join(part for part in (selection, crowd, aggregation) if part)


def labels_to_reach(labels: Sequence[float], win_rates: Sequence[float], target: float) -> float | None:
    """The labels a run needed to reach `target`: at the first round whose win rate is at or above it,
    interpolated linearly from the round before; None when no round reaches it."""
    for i, (n, rate) in enumerate(zip(labels, win_rates)):
        if rate >= target:
            if i == 0:
                return float(n)
            n0, rate0 = labels[i - 1], win_rates[i - 1]  # rate0 < target <= rate
            return n0 + (n - n0) * (target - rate0) / (rate - rate0)
    return None


def summarize(runs: Mapping[str, Mapping[str, Sequence[float]]]) -> dict:
    """The summary keys from the runs' `win_rates` and `labels_used` (see the module's docstring): a
    `labels_ratio_<selection>_vs_random` for each selection besides random among the runs."""
    selections = list(dict.fromkeys(name.split("/")[0] for name in runs))
    random_run = runs["random/clean"]
    target, spent = random_run["win_rates"][-1], random_run["labels_used"][-1]
    # A random run that ended no better than its round 0 sets no target: any run "reaches" it on 0 labels.
    progressed = target > random_run["win_rates"][0] and spent > 0
    ratios = {}
    for selection in selections[1:]:
        run = runs[f"{selection}/clean"]
        needed = labels_to_reach(run["labels_used"], run["win_rates"], target) if progressed else None
        ratios[f"labels_ratio_{selection}_vs_random"] = None if needed is None else round(needed / spent, 4)
    drops = {
        selection: {
            aggregation: round(runs[f"{selection}/clean"]["win_rates"][-1] - runs[f"{selection}/noisy/{aggregation}"]["win_rates"][-1], 4)
            for aggregation in AGGREGATIONS
        }
        for selection in selections
    }
    return {
        **ratios,
        "noisy_drop_majority": max(d["majority"] for d in drops.values()),
        "noisy_drop_reliability": max(d["reliability"] for d in drops.values()),
        "noisy_drop_by_selection": drops,
    }


def mean_runs(per_seed: Sequence[Mapping[str, Mapping[str, Sequence]]]) -> dict[str, dict]:
    """Per run, the mean over seeds of each per-round figure (`win_rates`, `labels_used`, `kl`), with every seed's
    win rates and statuses beside it."""
    return {
        name: {
            **{
                key: [round(statistics.fmean(values), 4) for values in zip(*(runs[name][key] for runs in per_seed))]
                for key in ("win_rates", "labels_used", "kl")
            },
            "win_rates_by_seed": [list(runs[name]["win_rates"]) for runs in per_seed],
            "statuses_by_seed": [list(runs[name]["statuses"]) for runs in per_seed],
        }
        for name in per_seed[0]
    }


def seed_run(args: argparse.Namespace, oracle, seed: int) -> dict[str, dict]:
    """The runs on one seed (its own prompts, held-out set, samples and training), each its own campaign."""
    from labeling.models import Judgment, Split
    from simulation import annotators, loop
    from training.models import TrainingRound

    args.seed = seed  # campaign_make and round_config read it
    results: dict[str, dict] = {}
    for selection, crowd, aggregation in runs_of(args.selections):
        name = run_name(selection, crowd, aggregation)
        campaign = loop_bench.campaign_make(
            args,
            name=f"efficiency seed {seed} {name}",
            annotations_per_pair=args.annotations_per_pair,
            pair_selection=selection,
        )
        heldout = campaign.prompts.filter(split=Split.HELDOUT).count()
        pipeline = {
            "min_posterior": args.min_posterior,
            "posterior_smoothing": args.posterior_smoothing,
            "aggregation": {"winner": "posterior"},
        }
        if aggregation != "reliability":
            pipeline = {}
        config = loop.LoopSettings(
            annotators=args.annotators,
            seed=seed,
            prompts_per_round=args.candidates + heldout,  # held-out prompts are served, and so sampled, first
            label_budget=args.budget,
            behaviours=tuple(annotators.noisy_crowd(args.annotators, flip=args.flip)) if crowd == "noisy" else (),
            eval_samples=args.eval_samples,
            round_config=loop_bench.round_config(args, **pipeline),
        )
        report = loop.loop_run(campaign=campaign, rounds=args.rounds, oracle=oracle, oracle_name=args.oracle, config=config)
        training_judgments = Judgment.objects.filter(
            comparison__prompt__campaign=campaign, comparison__prompt__split=Split.TRAIN
        )
        rounds = TrainingRound.objects.filter(campaign=campaign).order_by("number")
        results[name] = {
            "win_rates": [round(w, 4) for w in report.win_rates],
            "labels_used": [0] + [training_judgments.filter(created_at__lt=r.created_at).count() for r in rounds],
            "kl": [round(k, 4) for k in report.kl],
            "statuses": [r.status for r in report.rounds],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    loop_bench.add_loop_arguments(parser)
    parser.add_argument("--seeds", type=int, default=SEEDS, help="Seeds run, from --seed on; the summary is of their mean curves.")
    parser.add_argument("--budget", type=int, default=150, help="Human judgments on training pairs per round.")
    parser.add_argument("--candidates", type=int, help="Training pairs sampled per round (default: 3x the budget's pairs).")
    parser.add_argument("--annotations-per-pair", type=int, default=3)
    parser.add_argument("--flip", type=float, default=0.4, help="How often the noisy crowd's flippers flip.")
    parser.add_argument("--min-posterior", type=float, default=0.6, help="The reliability runs drop pairs below it.")
    parser.add_argument(
        "--posterior-smoothing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="The reliability runs also train with per-pair label smoothing 1 - posterior (default: off).",
    )
    parser.add_argument(
        "--selections",
        type=lambda text: text.split(","),
        default=list(SELECTIONS),
        help=f"Comma-separated pair selections to run, random first ({', '.join(MODES)}; default: "
        f"{','.join(SELECTIONS)}), each with the clean and both noisy runs.",
    )
    args = parser.parse_args()
    if args.selections[0] != RANDOM or len(args.selections) < 2 or len(set(args.selections)) < len(args.selections):
        parser.error("--selections must start with random and name at least one other selection, each once")
    if unknown := set(args.selections) - set(MODES):
        parser.error(f"--selections: unknown {', '.join(sorted(unknown))} (known: {', '.join(MODES)})")
    pairs = args.budget // args.annotations_per_pair
    if pairs < 1:
        parser.error(f"--budget {args.budget} buys no pair at {args.annotations_per_pair} judgments each")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    args.candidates = args.candidates or 3 * pairs
    # Held-out pairs are judged three times each and most tiny-model pairs tie under the built-in oracles
    # (59 of 96 under positive): at loop.py's fifth held out, the gate had 37 decisive pairs, under its 50,
    # and all 18 rounds of the six runs ended "not evaluated" at 0.5. Two fifths give it about 75.
    if args.heldout is None:
        args.heldout = max(HELDOUT_SHARE, loop_bench.POLICY_DEFAULTS[args.policy]["heldout"])

    started = time.perf_counter()
    loop_bench.loop_setup(args, prefix="bench-efficiency-")
    from simulation import oracles

    oracle = oracles.resolve(args.oracle)
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed = []
    for seed in seeds:
        per_seed.append(seed_run(args, oracle, seed))
        # Each seed's figures as it ends (a long run can be read, or stopped, before the summary line).
        print(json.dumps({"seed": seed, "runs": per_seed[-1], **summarize(per_seed[-1])}), flush=True)
    runs = mean_runs(per_seed)
    print(
        json.dumps(
            {
                "bench": "label_efficiency",
                "policy": args.policy,
                "oracle": args.oracle,
                "seeds": seeds,
                "rounds": args.rounds,
                "prompts": args.prompts,
                "budget": args.budget,
                "candidates": args.candidates,
                "annotations_per_pair": args.annotations_per_pair,
                "annotators": args.annotators,
                "flip": args.flip,
                "min_posterior": args.min_posterior,
                "posterior_smoothing": args.posterior_smoothing,
                "selections": args.selections,
                "gate": {
                    "min_accuracy": args.gate_min_accuracy,
                    "tolerance": args.gate_tolerance,
                    "min_pairs": args.gate_min_pairs,
                },
                "runs": runs,
                **summarize(runs),
                "by_seed": [
                    {"seed": seed, **{k: v for k, v in summarize(one).items() if k != "noisy_drop_by_selection"}}
                    for seed, one in zip(seeds, per_seed)
                ],
                "wall_s": round(time.perf_counter() - started, 1),
                "cpu_s": round(loop_bench.cpu_seconds(), 1),
            }
        )
    )


if __name__ == "__main__":
    main()

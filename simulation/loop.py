"""The closed loop, unattended: generate pairs, let simulated annotators judge them
over the HTTP API, run a DPO round, promote, repeat; then score every round's
policy against round 0 on held-out prompts with the oracle.

This is the product's promise shown end to end through the interfaces real users
touch: the annotators are HTTP clients (simulation.annotators), the rounds are the
same Celery task bodies an admin starts (run eagerly here, in this process).
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.db.models import Max
from tqdm import tqdm

from generation import services as generation_services
from generation.backends import SamplingConfig, get_generator
from generation.models import ModelVersion
from generation.selectors import prompt_model_input, prompts_to_sample
from labeling import services as labeling_services
from labeling.models import Campaign, Comparison, ComparisonStatus, JudgmentSource, Split
from simulation import annotators
from simulation.annotators import Behaviour
from simulation.oracles import Oracle
from training import services as training_services
from training.config import RoundConfig
from training.models import RoundStatus, TrainingRound


@dataclass
class RoundScore:
    round: int
    version: str
    status: str
    win_rate: float
    win_low: float
    win_high: float
    kl: float
    mean_length: float
    judgments: int = 0


@dataclass
class LoopReport:
    campaign: str
    oracle: str
    rounds: list[RoundScore] = field(default_factory=list)

    @property
    def win_rates(self) -> list[float]:
        return [r.win_rate for r in self.rounds]

    @property
    def kl(self) -> list[float]:
        return [r.kl for r in self.rounds]

    def as_dict(self) -> dict:
        return {"campaign": self.campaign, "oracle": self.oracle, "rounds": [asdict(r) for r in self.rounds],
                "win_rates": self.win_rates, "kl": self.kl}


@dataclass(frozen=True)
class LoopSettings:
    annotators: int = 4
    noise: float = 0.0
    seed: int = 0
    temperature: float = 1.0
    max_tokens: int = 64
    eval_samples: int = 8  # fresh samples per held-out prompt when scoring a round
    prompts_per_round: int | None = None  # pairs sampled per round; None: every enabled prompt
    # Judgments on training pairs per round. None: every sampled pair is labeled. Set: the campaign's
    # pair_selection picks label_budget // annotations_per_pair of the sampled training pairs (scored by the
    # policy, for uncertainty and certainty), and the annotators stop after label_budget judgments (the queue
    # serves the picks first) plus those the round's held-out pairs need (served before them, labeled in full).
    label_budget: int | None = None
    # One per annotator (simulation.annotators.Behaviour); empty: every annotator flips with probability `noise`.
    behaviours: tuple[Behaviour, ...] = ()
    round_config: RoundConfig = field(default_factory=RoundConfig)


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (ties count as half a win)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _sample(policy: ModelVersion, prompts: list, config: LoopSettings) -> list[list]:
    # The same seeds for every policy: round r and round 0 answer the same draws of randomness.
    params = SamplingConfig(temperature=config.temperature, top_p=1.0, max_tokens=config.max_tokens)
    seeds = [config.seed * 100_003 + i * 1_000 for i in range(len(prompts))]
    return get_generator().generate(
        [prompt_model_input(p) for p in prompts], policy=policy, params=params, n=config.eval_samples, seeds=seeds
    )


def _kl_to_root(policy: ModelVersion, root: ModelVersion, prompts: list, samples: list[list]) -> float:
    """Monte-Carlo KL(pi_r || pi_0): mean over y ~ pi_r of log pi_r(y|x) - log pi_0(y|x)."""
    from transformers import AutoTokenizer

    from training.dpo_worker import load_model
    from training.evaluation import prompt_ids, sequence_logps

    tokenizer = AutoTokenizer.from_pretrained(policy.base_path)
    pairs = [
        (prompt_ids(tokenizer, prompt_model_input(p)), s.token_ids) for p, group in zip(prompts, samples) for s in group
    ]
    model = load_model(policy.base_path, policy.adapter_path, merge=True).eval()
    reference = load_model(root.base_path, root.adapter_path, merge=True).eval()
    pad = tokenizer.pad_token_id
    return float((sequence_logps(model, pairs, pad_token_id=pad) - sequence_logps(reference, pairs, pad_token_id=pad)).mean())


def score_rounds(
    *, campaign: Campaign, versions: list[tuple[int, ModelVersion, str]], oracle: Oracle, config: LoopSettings
) -> list[RoundScore]:
    """Every round's policy against round 0's on the campaign's held-out prompts, judged by the oracle."""
    prompts = list(campaign.prompts.filter(split=Split.HELDOUT, enabled=True).order_by("pk"))
    if not prompts:
        raise ValueError(f"campaign {campaign.name!r} has no enabled held-out prompts to score rounds on")
    root = versions[0][1]
    baseline = _sample(root, prompts, config)
    # A gated round keeps the policy before it: each version is sampled and measured once (same seeds anyway).
    measured = {root.pk: (baseline, 0.0)}
    scores = []
    for number, version, status in tqdm(versions, desc="scoring rounds", unit="round"):
        if version.pk not in measured:
            samples = _sample(version, prompts, config)
            measured[version.pk] = (samples, _kl_to_root(version, root, prompts, samples))
        samples, kl = measured[version.pk]
        wins = 0.0
        for prompt, mine, theirs in zip(prompts, samples, baseline):
            for a, b in zip(mine, theirs):
                verdict = oracle(prompt.display_text, a.text, b.text)
                wins += 1.0 if verdict == "a" else 0.5 if verdict == "tie" else 0.0
        n = sum(len(group) for group in samples)
        low, high = wilson_interval(wins, n)
        lengths = [len(s.token_ids) for group in samples for s in group]
        scores.append(
            RoundScore(
                round=number,
                version=version.name,
                status=status,
                win_rate=wins / n,
                win_low=low,
                win_high=high,
                kl=kl,
                mean_length=sum(lengths) / len(lengths),
            )
        )
    return scores


def _round_run_here(*, campaign: Campaign, config: RoundConfig) -> TrainingRound:
    """Start a round and run its Celery task body in this process, exactly as a worker would.

    `round_start` enqueues the task after commit; the harness must not send it to a broker nor switch
    the shared app to eager mode, so it asks for no enqueue and runs the task with `apply()` (local,
    leaving app.conf alone).
    """
    from training import tasks

    training_round = training_services.round_start(campaign=campaign, config=config, enqueue=False)
    tasks.round_run.apply(args=(training_round.pk,), throw=True)
    training_round.refresh_from_db()
    return training_round


def _heldout_first(*, campaign: Campaign) -> None:
    """Under a label budget, the held-out pairs (the gate's evidence, the same for every selection mode) are
    sampled and labeled in full, on top of the budget: their prompts are served before the training ones."""
    top = campaign.prompts.filter(split=Split.TRAIN).aggregate(top=Max("priority"))["top"] or 0
    labeling_services.prompts_set_priority(prompts=campaign.prompts.filter(split=Split.HELDOUT), priority=top + 1)


def _batch_pick(*, campaign: Campaign, config: LoopSettings, seed: int) -> int | None:
    """Under a label budget, what a finished job queues in the product (the batch of human work), run here;
    returns the judgments the annotators may store this round (None: all they are served)."""
    if config.label_budget is None:
        return None  # every pair is labeled: which come first does not matter
    n = campaign.annotations_per_pair
    if config.label_budget < n:
        raise ValueError(f"label_budget {config.label_budget} is less than one pair's {n} judgments")
    training_services.pairs_score_and_select(campaign=campaign, budget=config.label_budget // n, seed=seed)
    heldout = Comparison.objects.filter(
        prompt__campaign=campaign, prompt__split=Split.HELDOUT, status=ComparisonStatus.OPEN, is_gold=False
    ).values_list("judgments_count", flat=True)
    return config.label_budget + sum(n - done for done in heldout)


def loop_run(*, campaign: Campaign, rounds: int, oracle: Oracle, oracle_name: str, config: LoopSettings) -> LoopReport:
    """R rounds of generate → (pick) → judge (over HTTP) → DPO → promote, then the scores by round."""
    root = generation_services.campaign_policy_next(campaign=campaign)
    versions: list[tuple[int, ModelVersion, str]] = [(0, root, "initial")]
    judgments: list[int] = [0]
    # The loop's judges are scripts: its rounds train and are gated on simulated judgments, asked for by name.
    base = config.round_config.as_dict()
    aggregation = {**base["aggregation"], "sources": [JudgmentSource.SIMULATED.value]}
    # The loop samples and scores by itself: a promotion queues neither new pairs nor an A/B job.
    round_config = RoundConfig.from_dict({**base, "regenerate": False, "ab_share": 0.0, "aggregation": aggregation})
    credentials = annotators.annotators_ensure(
        campaign=campaign, prefix=f"sim-{campaign.pk}", count=config.annotators, password="simulated-annotator-pass"
    )
    if config.label_budget is not None:
        _heldout_first(campaign=campaign)
    with annotators.serve_in_thread() as url:
        for number in range(1, rounds + 1):
            campaign.refresh_from_db()
            sampling = {
                "campaign": campaign,
                "policy": campaign.active_policy,
                "seed": config.seed * 1_000 + number,
                "temperature": config.temperature,
                "max_tokens": config.max_tokens,
                "limit": config.prompts_per_round,
            }
            # When the policy has answered every prompt (the round before was not promoted), it draws new
            # pairs for them, on this round's seed, so the next round has new labels to learn from.
            missing = prompts_to_sample(
                campaign=campaign, policy=campaign.active_policy, limit=config.prompts_per_round
            ).exists()
            job = generation_services.generation_job_create(**sampling, only_missing=missing)
            # The harness sends nothing to a broker: it picks the batch itself, in this process.
            generation_services.generation_job_run(job=job, queue_selection=False)
            limit = _batch_pick(campaign=campaign, config=config, seed=config.seed * 1_000 + number)
            labeled = annotators.simulate(
                base_url=url,
                campaign=campaign.name,
                credentials=credentials,
                oracle=oracle,
                noise=config.noise,
                behaviours=config.behaviours or None,
                limit=limit,
                seed=config.seed * 1_000 + number,
            )
            training_round = _round_run_here(campaign=campaign, config=round_config)
            if training_round.status == RoundStatus.PROMOTED:
                versions.append((number, training_round.output_version, training_round.status))
            else:
                campaign.refresh_from_db()
                versions.append((number, campaign.active_policy, training_round.status))
            judgments.append(labeled.judgments)
    report = LoopReport(campaign=campaign.name, oracle=oracle_name)
    report.rounds = score_rounds(campaign=campaign, versions=versions, oracle=oracle, config=config)
    for score, count in zip(report.rounds, judgments):
        score.judgments = count
    return report


def report_write(*, report: LoopReport, out_dir: Path) -> tuple[Path, Path]:
    """The report as JSON and as a PNG: win rate (with its 95% interval) and KL to round 0, by round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "loop.json"
    json_path.write_text(json.dumps(report.as_dict(), indent=2))
    rounds = [r.round for r in report.rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.errorbar(
        rounds,
        report.win_rates,
        yerr=[[r.win_rate - r.win_low for r in report.rounds], [r.win_high - r.win_rate for r in report.rounds]],
        marker="o",
        capsize=4,
    )
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="round", ylabel=f"win rate vs round 0 ({report.oracle})", ylim=(0, 1), xticks=rounds)
    right.plot(report.kl, report.win_rates, marker="o")
    for r in report.rounds:
        right.annotate(str(r.round), (r.kl, r.win_rate), textcoords="offset points", xytext=(4, 4))
    right.set(xlabel="KL to round 0 (nats)", ylabel="win rate", ylim=(0, 1), title="reward-KL frontier")
    fig.suptitle(f"{report.campaign}: the loop, round by round")
    fig.tight_layout()
    png_path = out_dir / "loop.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return json_path, png_path

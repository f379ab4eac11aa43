import json
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from tqdm import tqdm

from generation import services as generation_services
from generation.models import ModelVersion
from labeling import quality, selection
from labeling import selectors as labeling_selectors
from labeling import services as labeling_services
from labeling.models import Campaign, Choice, PairSelection, Split
from training import gate, runner, scoring, selectors
from training.config import RoundConfig
from training.export import AggregationPolicy, export_to_file, preferences_count
from training.models import ACTIVE_ROUND_STATES, PreferenceSnapshot, RoundMetric, RoundStatus, TrainingRound

LOG_TAIL_LINES = 200
_FLUSH_EVERY_S = 1.0  # progress and log tail reach the database at most this often


class RoundAlreadyActive(Exception):
    """The campaign already has a queued or running round."""


class RoundError(Exception):
    """A round cannot go on (no data, a worker that said nothing); recorded on the round as its error."""


# Human labels per batch: the label budget per round of the issue that asked for active selection.
SELECTION_BUDGET = 150
# Judged pairs scored along with the candidates, to fit how often answers pick a side by |margin|.
SELECTION_HISTORY = 500


def pairs_score_and_select(*, campaign: Campaign, budget: int = SELECTION_BUDGET, seed: int = 0) -> dict[int, str]:
    """Top the campaign's batch of human work up to `budget` open picked pairs: score its candidate pairs with
    its active policy (uncertainty and certainty selection), then pick (labeling.selection).

    Uncertainty also scores the campaign's last SELECTION_HISTORY judged pairs, in the same pass, and fits
    on them how often a pair's truth is a side at a given |margin| and entropy (training.scoring.PairScore):
    selection weighs each candidate's uncertainty by it. A pair's truth is the one the campaign's Dawid-Skene
    fit settles on (over the sources the policy was trained on), not each raw answer: a left-clicker never
    says tie, a flipper turns ties into sides, and read raw they would teach selection that the pairs they
    judged are decisive. Each judgment counts once, so a pair weighs as much as in the raw answers.
    Topping up makes a second call (a redelivered task) a no-op until humans finish part of the batch.
    Model work runs before any transaction.
    """
    budget_left = budget - labeling_selectors.picked_open(campaign=campaign).count()
    candidates = list(labeling_selectors.selection_candidates(campaign=campaign)) if budget_left > 0 else []
    decisive, entropies = None, None
    if campaign.pair_selection != PairSelection.RANDOM and candidates:
        policy = generation_services.campaign_policy_next(campaign=campaign)
        sources = scoring.policy_judgment_sources(policy=policy)
        history = []
        if campaign.pair_selection == PairSelection.UNCERTAINTY:
            history = labeling_selectors.judged_pairs_recent(campaign=campaign, sources=sources, limit=SELECTION_HISTORY)
        scored = scoring.candidate_scores(comparisons=candidates + [pair for pair, _ in history], policy=policy)
        margins = {c.pk: None if scored[c.pk] is None else scored[c.pk].margin for c in candidates}
        entropies = {c.pk: scored[c.pk].entropy for c in candidates if scored[c.pk] is not None}
        truths = quality.campaign_reliability(campaign=campaign, sources=sources) if history else None
        decisive = selection.decisive_curve(
            (*scored[pair.pk], truths.truly_decisive(pair.pk, default=choice in (Choice.A, Choice.B)))
            for pair, choices in history
            if scored[pair.pk] is not None
            for choice in choices
        )
    else:
        margins = {c.pk: None for c in candidates}
    if not margins:
        return {}
    return labeling_services.pairs_select(
        campaign=campaign, margins=margins, budget=budget_left, seed=seed, entropies=entropies, decisive=decisive
    )


def artifacts_dir() -> Path:
    return Path(settings.ARTIFACTS_DIR).resolve()


# --- Preference snapshots ----------------------------------------------------------------------


def snapshot_create(
    *,
    campaign: Campaign,
    split: str = Split.TRAIN,
    policy: AggregationPolicy | None = None,
    fmt: str = "jsonl",
    prompt_format: str = "chat",
    path: Path | None = None,
    progress: bool = False,
    as_of: datetime | None = None,
) -> PreferenceSnapshot:
    """Export the campaign's aggregated preferences, settled as of `as_of` (default: now), to a file and record it.

    Without `path` the file goes under ARTIFACTS_DIR/snapshots/, named by its
    content hash: exporting unchanged data again rewrites the same file.
    """
    policy = policy or AggregationPolicy()
    directory = artifacts_dir() / "snapshots" / f"campaign-{campaign.pk}"
    target = Path(path) if path else directory / f".{split}-{uuid.uuid4().hex}.{fmt}"
    as_of = as_of or timezone.now()
    total = preferences_count(campaign=campaign, split=split, policy=policy, as_of=as_of) if progress else None
    with tqdm(total=total, unit="row", desc=f"exporting {campaign.name} ({split})", disable=not progress) as bar:
        result = export_to_file(
            campaign=campaign,
            split=split,
            policy=policy,
            fmt=fmt,
            path=target,
            prompt_format=prompt_format,
            on_row=lambda: bar.update(1),
            as_of=as_of,
        )
    final = result.path
    if path is None:
        final = directory / f"{split}-{result.sha256[:16]}.{fmt}"
        os.replace(result.path, final)
    return PreferenceSnapshot.objects.create(
        campaign=campaign,
        split=split,
        filters={
            "aggregation": policy.as_dict(),
            "format": fmt,
            "prompt_format": prompt_format,
            "conversational": result.conversational,
        },
        row_count=result.row_count,
        sha256=result.sha256,
        jsonl_path=str(final) if fmt == "jsonl" else "",
        parquet_path=str(final) if fmt == "parquet" else "",
    )


# --- Starting and cancelling rounds ------------------------------------------------------------


@transaction.atomic
def round_start(
    *, campaign: Campaign, config: RoundConfig | None = None, created_by: User | None = None, enqueue: bool = True
) -> TrainingRound:
    """Queue a DPO round for the campaign, trained from its active policy; the task starts after commit.

    `enqueue=False` creates the queued round without sending its task: for a caller that runs the task
    body itself (the simulation harness, with `round_run.apply()`).

    Raises RoundAlreadyActive when a round is queued or running: the partial
    unique constraint decides, so two schedulers firing at once still start one.
    """
    config = config or RoundConfig()
    gate_settings = {
        "gate_min_accuracy": settings.TRAINING_GATE_MIN_ACCURACY,
        "gate_min_heldout_pairs": settings.TRAINING_GATE_MIN_HELDOUT_PAIRS,
        "kl_budget": settings.TRAINING_KL_BUDGET,
        "ab_share": settings.TRAINING_AB_SHARE,
    }
    # Frozen into the round's config: a later settings change does not re-judge old rounds.
    unset = {name: value for name, value in gate_settings.items() if getattr(config, name) is None}
    config = RoundConfig.from_dict({**config.as_dict(), **unset})
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    start = generation_services.campaign_policy_next(campaign=campaign)
    reference = start if config.reference == "previous" else selectors.version_root(version=start)
    number = (TrainingRound.objects.filter(campaign=campaign).aggregate(n=Max("number"))["n"] or 0) + 1
    try:
        with transaction.atomic():
            training_round = TrainingRound.objects.create(
                campaign=campaign,
                number=number,
                start_version=start,
                reference_version=reference,
                config=config.as_dict(),
                evidence={"start": _evidence(campaign=campaign, config=config)},
                created_by=created_by,
            )
    except IntegrityError as exc:
        raise RoundAlreadyActive(f"{campaign.name} already has a round queued or running") from exc
    from training import tasks  # tasks import services: import here to keep the module graph acyclic

    if enqueue:
        transaction.on_commit(lambda: tasks.round_run.delay(training_round.pk))
    return training_round


def _evidence(*, campaign: Campaign, config: RoundConfig, as_of: datetime | None = None) -> dict:
    return selectors.round_evidence(
        campaign=campaign,
        policy=AggregationPolicy.from_dict(config.aggregation),
        min_heldout_pairs=config.gate_min_heldout_pairs,
        as_of=as_of,
    )


def round_cancel(*, training_round: TrainingRound) -> bool:
    """Cancel a queued or running round; the parent task kills its worker within a second.

    Nothing that serves changes: promotion only happens from the evaluating state.
    """
    return (
        TrainingRound.objects.filter(pk=training_round.pk, status__in=ACTIVE_ROUND_STATES).update(
            status=RoundStatus.CANCELLED, finished_at=timezone.now()
        )
        == 1
    )


def round_start_if_due(*, campaign: Campaign, min_new_preferences: int) -> TrainingRound | None:
    """The scheduler's rule: start a round when enough new preferences exist and none is running."""
    if TrainingRound.objects.filter(campaign=campaign, status__in=ACTIVE_ROUND_STATES).exists():
        return None
    config = RoundConfig(regenerate=True)
    new = selectors.preferences_new_count(campaign=campaign, policy=AggregationPolicy.from_dict(config.aggregation))
    if new < min_new_preferences:
        return None
    try:
        return round_start(campaign=campaign, config=config)
    except RoundAlreadyActive:
        return None


def retrain_due_campaigns(*, min_new_preferences: int) -> list[TrainingRound]:
    started = []
    for campaign in Campaign.objects.filter(is_active=True).order_by("pk"):
        training_round = round_start_if_due(campaign=campaign, min_new_preferences=min_new_preferences)
        if training_round is not None:
            started.append(training_round)
    return started


# --- Running a round ---------------------------------------------------------------------------


class _RoundReporter:
    """Turns the worker's events and output into RoundMetric rows, progress and the log tail."""

    def __init__(self, training_round: TrainingRound) -> None:
        self.round_id = training_round.pk
        self.tail: deque[str] = deque(training_round.log_tail.splitlines(), maxlen=LOG_TAIL_LINES)
        self.progress = 0.0
        self.trained: dict[str, Any] = {}
        self.results: dict[str, Any] | None = None
        self._flushed_at = 0.0
        self._started = time.monotonic()
        self.marks: dict[str, float] = {}  # seconds since the round began, per phase reached

    def mark(self, phase: str) -> None:
        self.marks.setdefault(phase, round(time.monotonic() - self._started, 3))

    def note(self, line: str) -> None:
        self.tail.append(line)

    def on_output(self, line: str) -> None:
        self.note(line)
        self.flush()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "progress":
            if event["step"] == 0:
                self.mark("worker_ready")  # imports, model and tokenized data loaded
                self.note(f"worker ready after {self.marks['worker_ready'] - self.marks['exported']:.1f} s")
            self.progress = event["step"] / event["max_steps"] if event["max_steps"] else 0.0
        elif kind == "log":
            self._store_metric(event)
        elif kind == "selected":
            self.note(
                f"kept {event['kept']} {event['split']} pairs, dropped {event['dropped']} "
                f"with a posterior below {event['min_posterior']}"
            )
        elif kind == "kl_check":
            verdict = "within: these weights are the candidate" if event["within"] else "over"
            self.note(f"step {event['step']}: KL to the reference {event['kl']:.2f} (budget {event['budget']:.2f}), {verdict}")
        elif kind == "trained":
            self.mark("trained")
            self.trained = event
            self.note(f"trained {event['global_step']} steps in {event['train_seconds']:.1f} s")
            if event["kl_checks"] and event["kept_step"] == 0:
                self.note("no point of the round within the KL budget: the candidate is its start")
        elif kind == "evaluating":
            TrainingRound.objects.filter(pk=self.round_id, status=RoundStatus.RUNNING).update(
                status=RoundStatus.EVALUATING
            )
            self.note("evaluating on held-out pairs")
        elif kind == "evaluated":
            self.mark("evaluated")
            self.results = event["results"]
        self.flush(force=kind != "progress")

    def _store_metric(self, event: dict[str, Any]) -> None:
        values = event["values"]
        metric, created = RoundMetric.objects.get_or_create(
            round_id=self.round_id, step=event["step"], defaults={"epoch": event.get("epoch"), "values": values}
        )
        if not created:  # the trainer's closing summary arrives with the last step's number
            metric.values = {**metric.values, **values}
            metric.save(update_fields=["values"])
        shown = " ".join(
            f"{k}={v:.4g}" for k, v in values.items() if k in ("loss", "rewards/accuracies", "rewards/margins")
        )
        if shown:  # the closing summary (runtime, throughput) has none of these
            self.note(f"step {event['step']}: {shown}")

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._flushed_at < _FLUSH_EVERY_S:
            return
        self._flushed_at = now
        TrainingRound.objects.filter(pk=self.round_id).update(progress=self.progress, log_tail=self.log_tail)

    @property
    def log_tail(self) -> str:
        return "\n".join(self.tail)

    def should_cancel(self) -> bool:
        return TrainingRound.objects.filter(pk=self.round_id, status=RoundStatus.CANCELLED).exists()


def _version_spec(version: ModelVersion) -> dict[str, str]:
    return {"base_path": version.base_path, "adapter_path": version.adapter_path}


def round_dir(training_round: TrainingRound) -> Path:
    return (
        artifacts_dir()
        / "rounds"
        / f"campaign-{training_round.campaign_id}"
        / f"round-{training_round.number}-{training_round.pk}"
    )


def _round_train(training_round: TrainingRound, reporter: _RoundReporter) -> None:
    """Export, then train and evaluate in the worker process; the results land on `reporter`."""
    config = RoundConfig.from_dict(training_round.config)
    policy = AggregationPolicy.from_dict(config.aggregation)
    campaign = training_round.campaign
    # One instant for both exports and the evidence, so the page's "at export" counts are the rows trained on
    # (an answer's undo window may close between the queries).
    as_of = timezone.now()
    train = snapshot_create(campaign=campaign, split=Split.TRAIN, policy=policy, as_of=as_of)
    heldout = snapshot_create(campaign=campaign, split=Split.HELDOUT, policy=policy, as_of=as_of)
    training_round.snapshot, training_round.heldout_snapshot = train, heldout
    # Judgments that arrived since the start count here: this is what the round trained on.
    evidence = _evidence(campaign=campaign, config=config, as_of=as_of)
    training_round.evidence = {**training_round.evidence, "export": evidence}
    training_round.save(update_fields=["snapshot", "heldout_snapshot", "evidence"])
    reporter.mark("exported")
    seconds = reporter.marks["exported"]
    reporter.note(f"exported {train.row_count} training and {heldout.row_count} held-out pairs in {seconds:.1f} s")
    if train.row_count == 0:
        raise RoundError("no training preferences to train on")

    work = round_dir(training_round)
    work.mkdir(parents=True, exist_ok=True)
    spec = {
        "train_path": train.jsonl_path,
        "heldout_path": heldout.jsonl_path if heldout.row_count else None,
        "output_dir": str(work),
        "policy": _version_spec(training_round.start_version),
        "reference": _version_spec(training_round.reference_version),
        # The gate's pairing: the candidate must beat the policy it would replace, both scored against the root.
        "incumbent": _version_spec(training_round.start_version),
        "base": _version_spec(selectors.version_root(version=training_round.start_version)),
        "config": config.as_dict(),
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    if reporter.should_cancel():
        raise runner.WorkerCancelled()
    runner.run_worker(
        command=runner.worker_command(launcher=settings.TRAINING_LAUNCHER, spec_path=spec_path),
        cwd=Path(settings.BASE_DIR),
        # A warm worker (imports done) serves the default launcher; a custom one always starts fresh.
        spec_path=None if settings.TRAINING_LAUNCHER else spec_path,
        log_path=work / "worker.log",
        on_event=reporter.on_event,
        on_output=reporter.on_output,
        should_cancel=reporter.should_cancel,
    )
    if reporter.results is None:
        raise RoundError("the worker finished without evaluation results")


@transaction.atomic
def _round_promote(*, round_id: int, eval_results: dict[str, Any], log_tail: str, model_dir: str) -> bool:
    """Register the worker's artifact (`model_dir`, as its "trained" event reported it) and serve it."""
    training_round = TrainingRound.objects.select_for_update().get(pk=round_id)
    if training_round.status != RoundStatus.EVALUATING:  # cancelled while we evaluated
        return False
    config = RoundConfig.from_dict(training_round.config)
    start = training_round.start_version
    version = generation_services.model_version_register(
        name=f"{training_round.campaign.name}/dpo-round-{training_round.number}-{training_round.pk}",
        base_path=start.base_path if config.lora else model_dir,
        adapter_path=model_dir if config.lora else "",
        parent=start,
    )
    training_round.output_version = version
    labeling_services.campaign_set_active_policy(campaign=training_round.campaign, policy_id=version.pk)
    training_round.status = RoundStatus.PROMOTED
    # The queued jobs' ids live here only: the round page links to them from eval_results["queued_jobs"].
    training_round.eval_results = {
        **eval_results,
        "queued_jobs": _promotion_jobs(training_round=training_round, config=config),
    }
    training_round.progress = 1.0
    training_round.log_tail = log_tail
    training_round.finished_at = timezone.now()
    training_round.save(
        update_fields=["output_version", "status", "eval_results", "progress", "log_tail", "finished_at"]
    )
    return True


def _promotion_jobs(*, training_round: TrainingRound, config: RoundConfig) -> dict[str, int]:
    """Queue what a promotion asks for: new pairs from the new policy (`regenerate`) and an A/B job of the
    new policy against the one it replaced on a share of the held-out prompts (`ab_share`)."""
    campaign, new, previous = training_round.campaign, training_round.output_version, training_round.start_version
    jobs = {}
    if config.regenerate:
        jobs["regenerate"] = generation_services.generation_job_start(campaign=campaign, policy=new).pk
    ab_share = settings.TRAINING_AB_SHARE if config.ab_share is None else config.ab_share
    heldout_prompts = campaign.prompts.filter(enabled=True, split=Split.HELDOUT).count()
    if ab_share > 0 and heldout_prompts:
        jobs["ab"] = generation_services.generation_job_start(
            campaign=campaign,
            policy=new,
            policy_b=previous,
            split=Split.HELDOUT,
            limit=math.ceil(ab_share * heldout_prompts),
        ).pk
    return jobs


def _round_finish(*, round_id: int, status: str, from_states: Iterable[str], **fields: Any) -> None:
    TrainingRound.objects.filter(pk=round_id, status__in=from_states).update(
        status=status, finished_at=timezone.now(), **fields
    )


def _round_decide(training_round: TrainingRound, reporter: "_RoundReporter") -> TrainingRound:
    """The gate's decision on a trained round, recorded: promoted, gated or not evaluated."""
    round_id = training_round.pk
    results = dict(reporter.results)
    reporter.mark("worker_exited")
    results["timings"] = reporter.marks
    results["train_seconds"] = reporter.trained.get("train_seconds")
    results["train_samples_per_second"] = reporter.trained.get("samples_per_second")
    results["kl_checks"] = reporter.trained.get("kl_checks", [])
    results["kept_step"] = reporter.trained.get("kept_step")
    config = RoundConfig.from_dict(training_round.config)
    paired = results.pop("paired")
    decision = gate.decide(
        candidate_margins=paired["candidate"],
        incumbent_margins=paired["incumbent"],
        length_diff=paired["length_diff"],
        kl=results.get("kl"),
        min_pairs=config.gate_min_heldout_pairs,
        threshold=config.gate_min_accuracy,
        tolerance=config.gate_tolerance,
        kl_budget=config.kl_budget,
        kept_step=results["kept_step"],
    )
    results["gate"] = decision.as_dict()
    reporter.note(decision.reason)
    if decision.passed and _round_promote(
        round_id=round_id,
        eval_results=results,
        log_tail=reporter.log_tail,
        model_dir=reporter.trained["model_dir"],
    ):
        return TrainingRound.objects.get(pk=round_id)
    _round_finish(
        round_id=round_id,
        status=RoundStatus.NOT_EVALUATED if decision.verdict == gate.Verdict.NOT_EVALUATED else RoundStatus.GATED,
        from_states=[RoundStatus.EVALUATING],
        eval_results=results,
        progress=1.0,
        log_tail=reporter.log_tail,
    )
    return TrainingRound.objects.get(pk=round_id)


def round_execute(*, round_id: int) -> TrainingRound | None:
    """Run a queued round to its end: promoted, gated, failed or cancelled (the training task's body).

    Idempotent: only a queued round is claimed, so a redelivered task does nothing.
    """
    claimed = TrainingRound.objects.filter(pk=round_id, status=RoundStatus.QUEUED).update(
        status=RoundStatus.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return None
    training_round = TrainingRound.objects.select_related("campaign", "start_version", "reference_version").get(
        pk=round_id
    )
    reporter = _RoundReporter(training_round)
    try:
        _round_train(training_round, reporter)
        return _round_decide(training_round, reporter)
    except runner.WorkerCancelled:
        reporter.note("cancelled")
        TrainingRound.objects.filter(pk=round_id).update(log_tail=reporter.log_tail)
        return TrainingRound.objects.get(pk=round_id)
    except (runner.WorkerFailed, RoundError) as exc:
        reporter.note(f"failed: {exc}")
        _round_finish(
            round_id=round_id,
            status=RoundStatus.FAILED,
            from_states=ACTIVE_ROUND_STATES,
            error=str(exc),
            log_tail=reporter.log_tail,
        )
        return TrainingRound.objects.get(pk=round_id)
    except Exception as exc:
        # Unexpected: record it so the round does not block its campaign forever, then let Celery see it too.
        _round_finish(
            round_id=round_id,
            status=RoundStatus.FAILED,
            from_states=ACTIVE_ROUND_STATES,
            error=f"{type(exc).__name__}: {exc}",
            log_tail=reporter.log_tail,
        )
        raise


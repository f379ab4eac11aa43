"""A DPO round's configuration: plain data, shared by the web side and the training worker.

Django-free on purpose: the worker (`python -m training.dpo_worker`) may run under
`accelerate launch` on a GPU host that has no database credentials.
"""

import math
import re
import reprlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "sigmoid_norm")
# The loss types whose per-pair loss TRL computes as -logsigmoid(beta * delta): per-pair smoothing applies to them.
SMOOTHABLE_LOSS_TYPES = ("sigmoid", "sigmoid_norm")
REFERENCES = ("previous", "initial")
PRECISIONS = ("auto", "fp32", "bf16")
# labeling.models.JudgmentSource's values, spelled out: this module stays Django-free.
JUDGMENT_SOURCES = ("human", "simulated", "imported")
# Which side of a kept pair an export chooses (AggregationPolicy.winner).
WINNERS = ("votes", "posterior")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")

# What each field's declared type accepts from JSON or a form, and how a refusal names it.
# bool is an int in Python, and JSON gives 8 for 8.0: both are told apart here.
_TYPES = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
    float | None: ("a number or null", lambda v: v is None or _TYPES[float][1](v)),
    int | None: ("an integer or null", lambda v: v is None or _TYPES[int][1](v)),
    str: ("a string", lambda v: isinstance(v, str)),
    tuple[str, ...]: ("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    dict: ("an object", lambda v: isinstance(v, dict)),
}


def _parse(cls, data: dict[str, Any] | None, *, what: str) -> dict[str, Any]:
    """`data` checked against the dataclass's fields: no unknown keys, every value of its field's type.

    Configs arrive as JSON (API) or form input; a wrong type would otherwise pass the
    range checks (8.5 >= 1) and fail only inside the training worker.
    """
    data = dict(data or {})
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(unknown)}")
    problems = []
    for f in fields(cls):
        name, accepts = _TYPES[f.type]
        if f.name in data and not accepts(data[f.name]):
            problems.append(f"{f.name} must be {name}, not {reprlib.repr(data[f.name])}")
    if problems:
        raise ValueError("; ".join(problems))
    return data


@dataclass(frozen=True)
class AggregationPolicy:
    """How a comparison's judgments become one (chosen, rejected) row, or none.

    Every judgment votes a, b, tie or both_bad. The winner must be a or b, hold a
    strict plurality and at least `min_agreement` of the counted votes, over at
    least `min_judgments` counted votes. With `drop_ties` (the default) a tie vote
    counts, so a pair whose judges mostly call it a tie gives no row; without it,
    tie votes abstain. `drop_both_bad` works the same way for both_bad votes.

    Only judgments from `sources` vote (human ones by default: simulated and
    imported judgments enter only when asked for). With `settled_only` (the
    default) a pair is exported only once it is settled: it has all of its
    campaign's N judgments from those sources, so a later vote can no longer
    flip its majority. An imported judgment is a data set's settled label on its own.

    `winner` says which side of a kept pair is chosen: "votes" (the default), the one
    the votes name; "posterior", the one the campaign's Dawid-Skene fit
    (labeling.reliability) finds likelier to be truly better, which weighs each vote
    by its annotator's reliability and side bias: where a left-clicker and a flipper
    outvote a reliable annotator, the row is turned to the reliable one's side rather
    than trained the wrong way or dropped. Which pairs give a row is decided by the
    votes in both cases.
    """

    min_judgments: int = 1
    min_agreement: float = 0.5
    drop_ties: bool = True
    drop_both_bad: bool = True
    include_gold: bool = False
    settled_only: bool = True
    sources: tuple[str, ...] = ("human",)
    winner: str = "votes"

    def __post_init__(self) -> None:
        if self.min_judgments < 1:
            raise ValueError("min_judgments must be at least 1")
        if self.winner not in WINNERS:
            raise ValueError(f"winner must be one of {', '.join(WINNERS)}, not {self.winner!r}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError("min_agreement must be between 0 and 1")
        unknown = sorted(set(self.sources) - set(JUDGMENT_SOURCES))
        if not self.sources or unknown:
            raise ValueError(f"sources must be a non-empty subset of {', '.join(JUDGMENT_SOURCES)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "AggregationPolicy":
        data = dict(data or {})
        if isinstance(data.get("sources"), str):  # "human,imported", as a form or the command line gives it
            data["sources"] = [s.strip() for s in data["sources"].split(",") if s.strip()]
        data = _parse(cls, data, what="aggregation")
        if "sources" in data:
            data["sources"] = tuple(data["sources"])
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return data


@dataclass(frozen=True)
class RoundConfig:
    beta: float = 0.1
    learning_rate: float = 1e-4
    epochs: float = 1.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    loss_type: str = "sigmoid"
    # "previous": the policy the round starts from (iterative DPO); "initial": the root of the policy chain.
    reference: str = "previous"
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    # Empty: the Linear projections of the model's own attention blocks (training.dpo_worker.attention_projections).
    lora_target_modules: tuple[str, ...] = ()
    precision: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    seed: int = 0
    # Evaluation: fresh samples from the new policy on this many held-out prompts.
    eval_prompts: int = 8
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 16
    # Gate: None takes settings.TRAINING_GATE_MIN_ACCURACY when the round starts. The candidate's 95% lower
    # bound of its length-controlled held-out accuracy must be above it (training.gate).
    gate_min_accuracy: float | None = None
    # Fewer held-out pairs than this: "not evaluated", never promoted (None: TRAINING_GATE_MIN_HELDOUT_PAIRS).
    gate_min_heldout_pairs: int | None = None
    # The most mean KL (nats per sample) to the round's reference a promoted candidate may have
    # (None: TRAINING_KL_BUDGET).
    kl_budget: float | None = None
    # With a KL budget, the worker keeps the round's weights at this many points, after 1/2**(n-1), ...,
    # 1/4, 1/2 and all of its steps; at the end it estimates the KL to the reference (the gate's own
    # estimate: the same held-out prompts and seed) of the final weights and, over the budget, of the points
    # from the latest back, so a round that overshoots ends at the furthest point the gate accepts instead of
    # being thrown away (0: no checks; training.dpo_worker._kl_budget_callback).
    kl_checks: int = 6
    # How far below zero the 95% lower bound of the paired (candidate - incumbent) held-out
    # score may go; 0: the candidate must be no worse than the incumbent with 95% confidence.
    gate_tolerance: float = 0.0
    # Queue a generation job with the new policy once it is promoted (closes the loop).
    regenerate: bool = True
    # Once promoted, an A/B job of the new policy against the one it replaced samples this share of the
    # held-out prompts (None: TRAINING_AB_SHARE; 0: none): the leaderboard's evidence.
    ab_share: float | None = None
    # Per-pair confidence from the annotators' reliability: each exported row's `posterior` is the probability
    # that its chosen completion is truly the better one (labeling.reliability).
    # Pairs below this posterior are dropped (0: all kept): from training, and from the gate's held-out evidence.
    min_posterior: float = 0.0
    # Train with conservative DPO's label smoothing per pair, eps = 1 - posterior (training.confidence_dpo).
    posterior_smoothing: bool = False
    aggregation: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.beta <= 0:
            problems.append("beta must be positive")
        if not 0 <= self.learning_rate < 1:  # 0: a candidate equal to its start (the gate's null case)
            problems.append("learning_rate must be in [0, 1)")
        if self.epochs <= 0:
            problems.append("epochs must be positive")
        for name in ("batch_size", "gradient_accumulation_steps", "logging_steps", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.max_length < 8:
            problems.append("max_length must be at least 8")
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss_type must be one of {', '.join(LOSS_TYPES)}")
        if self.reference not in REFERENCES:
            problems.append(f"reference must be one of {', '.join(REFERENCES)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if not 0 <= self.lora_dropout < 1:
            problems.append("lora_dropout must be in [0, 1)")
        if self.eval_prompts < 0 or self.eval_max_new_tokens < 1 or self.eval_batch_size < 1:
            problems.append("eval_prompts must be >= 0, eval_max_new_tokens and eval_batch_size >= 1")
        if self.gate_min_accuracy is not None and not 0 <= self.gate_min_accuracy <= 1:
            problems.append("gate_min_accuracy must be between 0 and 1")
        if self.gate_min_heldout_pairs is not None and self.gate_min_heldout_pairs < 1:
            problems.append("gate_min_heldout_pairs must be at least 1")
        if self.kl_budget is not None and self.kl_budget < 0:
            problems.append("kl_budget must be at least 0")
        if self.kl_checks < 0:
            problems.append("kl_checks must be at least 0")
        if self.ab_share is not None and not 0 <= self.ab_share <= 1:
            problems.append("ab_share must be between 0 and 1")
        if not 0 <= self.gate_tolerance <= 1:
            problems.append("gate_tolerance must be between 0 and 1")
        if not 0 <= self.min_posterior <= 1:
            problems.append("min_posterior must be between 0 and 1")
        if self.posterior_smoothing and self.loss_type not in SMOOTHABLE_LOSS_TYPES:
            problems.append(f"posterior_smoothing needs loss_type {' or '.join(SMOOTHABLE_LOSS_TYPES)}")
        if not all(_MODULE_NAME.fullmatch(name) for name in self.lora_target_modules):
            problems.append("lora_target_modules must be module names (letters, digits, _ and .)")
        try:
            AggregationPolicy.from_dict(self.aggregation)
        except ValueError as exc:
            problems.append(f"aggregation: {exc}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RoundConfig":
        data = dict(data or {})
        if isinstance(data.get("lora_target_modules"), str):
            data["lora_target_modules"] = data["lora_target_modules"].split(",")
        data = _parse(cls, data, what="round config")
        if "lora_target_modules" in data:
            modules = data["lora_target_modules"]
            names = modules.split(",") if isinstance(modules, str) else modules
            data["lora_target_modules"] = tuple(name.strip() for name in names if name.strip())
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        return data

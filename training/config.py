"""A DPO round's configuration: plain data, shared by the web side and the training worker.

Django-free on purpose: the worker (`python -m training.dpo_worker`) may run under
`accelerate launch` on a GPU host that has no database credentials.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "sigmoid_norm")
REFERENCES = ("previous", "initial")
PRECISIONS = ("auto", "fp32", "bf16")


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
    # Gate: None takes settings.TRAINING_GATE_MIN_ACCURACY when the round starts.
    gate_min_accuracy: float | None = None
    # How far below the previous promoted round's held-out accuracy still passes. That
    # accuracy was measured on an earlier (smaller) held-out set, so an exact "no worse"
    # rejects good rounds on sampling noise; 0 keeps the strict rule.
    gate_tolerance: float = 0.0
    # Queue a generation job with the new policy once it is promoted (closes the loop).
    regenerate: bool = True
    aggregation: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.beta <= 0:
            problems.append("beta must be positive")
        if not 0 < self.learning_rate < 1:
            problems.append("learning_rate must be in (0, 1)")
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
        if not 0 <= self.gate_tolerance <= 1:
            problems.append("gate_tolerance must be between 0 and 1")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RoundConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown round config keys: {', '.join(unknown)}")
        if "lora_target_modules" in data:
            modules = data["lora_target_modules"]
            names = modules.split(",") if isinstance(modules, str) else modules
            data["lora_target_modules"] = tuple(name.strip() for name in names if name.strip())
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        return data

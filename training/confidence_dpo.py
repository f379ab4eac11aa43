"""DPO with a per-pair label confidence: conservative DPO's label smoothing, one value per pair.

Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences") assumes
each label is flipped with a known probability eps and minimizes the expected loss:

    loss_i = -(1 - eps_i) * logsigmoid(beta * h_i) - eps_i * logsigmoid(-beta * h_i)

TRL's own loss types take one global eps. Here eps_i = 1 - posterior_i, the
probability (labeling.reliability) that the pair's chosen completion is *not* the
better one: a pair the annotators are sure of trains as plain DPO, a coin-flip
pair (posterior 0.5) gives no gradient at all.

Built on TRL 1.16's DPOTrainer; the per-row value travels as a dataset column:
- `posterior` is kept through TRL's column pruning (its signature columns) and
  batched by a thin wrapper around TRL's own collator;
- TRL computes per-pair losses inline in `_compute_loss`, and its "sigmoid"
  branch is exactly `-F.logsigmoid(beta * h)` over the batch. We override
  `_compute_loss` to run TRL's, with its module's `F` seen through a view whose
  `logsigmoid` is the smoothed one for this batch's eps. Everything else (the
  forward passes, the reference, the metrics) stays TRL's. The view refuses any
  other shape, so a TRL that changes that branch fails loudly instead of silently
  training something else; tests check the loss against hand computation.
"""

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
import trl.trainer.dpo_trainer as trl_dpo
from trl import DPOTrainer

from training.config import SMOOTHABLE_LOSS_TYPES

POSTERIOR = "posterior"


def smoothed_logsigmoid(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """(1 - eps) * logsigmoid(x) + eps * logsigmoid(-x): minus conservative DPO's per-pair loss."""
    return (1 - eps) * F.logsigmoid(x) + eps * F.logsigmoid(-x)


class _KeepsPosterior:
    """TRL's collator, plus the batch's `posterior` values as a float tensor."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        if POSTERIOR in examples[0]:  # absent only in TRL's reference precompute pass, which needs none
            batch[POSTERIOR] = torch.tensor([float(e[POSTERIOR]) for e in examples], dtype=torch.float32)
        return batch


@contextmanager
def _smoothing(eps: torch.Tensor) -> Iterator[None]:
    calls = []

    def logsigmoid(x: torch.Tensor) -> torch.Tensor:
        if x.shape != eps.shape or calls:
            raise RuntimeError(
                f"TRL's DPO loss no longer calls logsigmoid once over the batch (shape {tuple(x.shape)}, "
                f"{len(calls) + 1} calls): per-pair smoothing cannot be applied"
            )
        calls.append(x.shape)
        return smoothed_logsigmoid(x, eps.to(x.dtype))

    view = types.SimpleNamespace(**{name: getattr(F, name) for name in dir(F) if not name.startswith("__")})
    view.logsigmoid = logsigmoid
    original = trl_dpo.F
    trl_dpo.F = view
    try:
        yield
    finally:
        trl_dpo.F = original
    if not calls:
        raise RuntimeError("TRL's DPO loss did not call logsigmoid: per-pair smoothing was not applied")


class ConfidenceDPOTrainer(DPOTrainer):
    """DPOTrainer whose sigmoid loss is smoothed per pair by eps_i = 1 - posterior_i (a `posterior` column)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unsupported = sorted(set(self.loss_types) - set(SMOOTHABLE_LOSS_TYPES))
        if unsupported or len(self.loss_types) != 1:
            raise ValueError(f"per-pair smoothing needs one of {', '.join(SMOOTHABLE_LOSS_TYPES)}, not {self.loss_types}")
        if self.f_divergence_type != "reverse_kl":
            raise ValueError("per-pair smoothing needs the reverse KL divergence (standard DPO)")
        self.data_collator = _KeepsPosterior(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if POSTERIOR not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, POSTERIOR]

    def _compute_loss(self, model, inputs, return_outputs):
        posterior = inputs.pop(POSTERIOR)
        eps = (1.0 - posterior).clamp(0.0, 1.0)
        with _smoothing(eps):
            return super()._compute_loss(model, inputs, return_outputs)

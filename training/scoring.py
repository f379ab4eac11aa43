"""Candidate pairs scored for active selection: the active policy's implicit reward margin against its reference.

margin = beta * ((log pi - log pi_ref)(a) - (log pi - log pi_ref)(b)), tokenized as
training and the gate tokenize (training.evaluation), with the reference and beta
of the round that produced the policy. A policy no round produced (the campaign's
first model) is its own reference: every margin is 0, and selection among equal
margins is random (labeling.selection).
"""

from collections.abc import Sequence

from generation.models import ModelVersion
from generation.selectors import prompt_model_input
from labeling.models import Comparison
from training.config import AggregationPolicy, RoundConfig
from training.models import TrainingRound


def _produced_by(policy: ModelVersion) -> tuple[TrainingRound | None, RoundConfig]:
    """The round that produced the policy (None for a first model) and its config (the defaults without one)."""
    produced_by = TrainingRound.objects.filter(output_version=policy).select_related("reference_version").first()
    return produced_by, RoundConfig.from_dict(produced_by.config) if produced_by else RoundConfig()


def policy_reference(*, policy: ModelVersion) -> tuple[ModelVersion, float]:
    """The reference the policy was trained against, and that round's beta."""
    produced_by, config = _produced_by(policy)
    return (produced_by.reference_version if produced_by else policy), config.beta


def policy_judgment_sources(*, policy: ModelVersion) -> tuple[str, ...]:
    """The judgment sources the round that produced the policy trained on (human for a first model)."""
    return AggregationPolicy.from_dict(_produced_by(policy)[1].aggregation).sources


def candidate_margins(
    *, comparisons: Sequence[Comparison], policy: ModelVersion, max_length: int = 512, batch_size: int = 16
) -> dict[int, float | None]:
    """Per comparison id, the policy's margin for a over b; None for a pair whose prompt alone fills max_length."""
    reference, beta = policy_reference(policy=policy)
    if (reference.base_path, reference.adapter_path) == (policy.base_path, policy.adapter_path):
        return {c.pk: 0.0 for c in comparisons}
    # Slow imports and model loading: only here, never on a request path.
    import torch
    from transformers import AutoTokenizer

    from training import evaluation
    from training.dpo_worker import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(policy.base_path)
    scored: list[int] = []
    a_pairs, b_pairs = [], []
    for c in comparisons:
        split = evaluation.split_completions(
            tokenizer,
            prompt_model_input(c.prompt),
            [[{"role": "assistant", "content": c.completion_a.text}], [{"role": "assistant", "content": c.completion_b.text}]],
            max_length,
        )
        if split is None:
            continue
        head, (a, b) = split
        scored.append(c.pk)
        a_pairs.append((head, a))
        b_pairs.append((head, b))
    margins = {c.pk: None for c in comparisons}
    if scored:
        policy_model = load_model(policy.base_path, policy.adapter_path, merge=True, device=device).eval()
        reference_model = load_model(reference.base_path, reference.adapter_path, merge=True, device=device).eval()
        values = evaluation.pair_margins(
            policy_model,
            reference_model,
            (a_pairs, b_pairs),
            beta=beta,
            pad_token_id=tokenizer.pad_token_id,
            batch_size=batch_size,
        )
        margins.update(zip(scored, (float(v) for v in values)))
    return margins

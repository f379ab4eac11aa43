"""Candidate pairs scored for active selection: the active policy's implicit reward margin against its reference.

margin = beta * ((log pi - log pi_ref)(a) - (log pi - log pi_ref)(b)), tokenized as
training and the gate tokenize (training.evaluation), with the reference and beta
of the round that produced the policy. A policy no round produced (the campaign's
first model) is its own reference: every margin is 0. Beside it, the policy's
predictive entropy at the prompt, estimated from the pair's two samples: where the
margins cannot tell pairs apart, selection asks about the prompts the policy is
least sure how to answer (labeling.selection).
"""

from collections.abc import Sequence
from typing import NamedTuple

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


class PairScore(NamedTuple):
    """What the policy knows of a pair: `margin`, its implicit reward margin for a over b against its reference
    (near 0: it cannot tell the two apart), and `entropy`, its predictive entropy at the prompt estimated from
    the pair's two samples, -(log pi(a|x) + log pi(b|x)) / 2 in nats (high: it is unsure how to answer)."""

    margin: float
    entropy: float


def candidate_scores(
    *, comparisons: Sequence[Comparison], policy: ModelVersion, max_length: int = 512, batch_size: int = 16
) -> dict[int, PairScore | None]:
    """Per comparison id, the policy's PairScore; None for a pair whose prompt alone fills max_length.

    One pass of the policy over the pairs, and one of its reference unless the policy is its own (then every
    margin is 0 and only the entropies tell pairs apart)."""
    reference, beta = policy_reference(policy=policy)
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
    scores: dict[int, PairScore | None] = {c.pk: None for c in comparisons}
    if scored:
        policy_model = load_model(policy.base_path, policy.adapter_path, merge=True, device=device).eval()
        reference_model = policy_model
        if (reference.base_path, reference.adapter_path) != (policy.base_path, policy.adapter_path):
            reference_model = load_model(reference.base_path, reference.adapter_path, merge=True, device=device).eval()
        logps = evaluation.PairLogps((a_pairs, b_pairs), pad_token_id=tokenizer.pad_token_id, batch_size=batch_size)
        margins, own = logps.margins(policy_model, reference_model, beta=beta), logps.of(policy_model)
        entropies = -(own[: logps.n] + own[logps.n :]) / 2
        scores.update(zip(scored, (PairScore(float(m), float(h)) for m, h in zip(margins, entropies))))
    return scores

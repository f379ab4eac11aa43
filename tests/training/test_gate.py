"""The promotion gate decides on paired, length-controlled evidence with confidence bounds."""

import json
import random

import numpy as np
import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from training import dpo_worker, evaluation, gate
from training.config import RoundConfig

DEFAULTS = {"min_pairs": 50, "threshold": 0.5, "tolerance": 0.0, "kl_budget": 10.0}
WORDS = ["sea", "kite", "bread", "moon", "storm", "library", "snow", "garden", "river", "lamp", "blue", "quiet"]


def decide(candidate, incumbent=None, length_diff=None, kl=1.0, **overrides):
    n = len(candidate)
    return gate.decide(
        candidate_margins=candidate,
        incumbent_margins=np.zeros(n) if incumbent is None else incumbent,
        length_diff=np.zeros(n) if length_diff is None else length_diff,
        kl=kl,
        **{**DEFAULTS, **overrides},
    )


def test_two_heldout_pairs_are_never_promoted_however_clear_they_look():
    decision = decide([5.0, 5.0])

    assert decision.verdict == gate.Verdict.NOT_EVALUATED and not decision.passed
    assert "2 held-out pairs, at least 50 needed" in decision.reason


def test_one_heldout_pair_is_rejected_with_a_reason_and_a_decision_json_can_store():
    # An admin may lower min_pairs to 1 and open the tolerance wide: one pair still bounds nothing, and the
    # decision must stay valid JSON (a -inf bound once left the round stuck in "evaluating" on its save).
    decision = decide([5.0], min_pairs=1, threshold=0.0, tolerance=1.0)

    assert decision.verdict == gate.Verdict.REJECT and decision.difference_lower is None
    assert "one held-out pair (n=1) bounds no paired difference" in decision.reason
    json.dumps(decision.as_dict(), allow_nan=False)


def test_a_clear_gain_on_enough_pairs_passes_with_its_bounds_reported():
    rng = np.random.default_rng(0)
    candidate = rng.normal(1.0, 1.0, 200)  # favours the human's choice on about 84% of pairs
    lengths = rng.integers(-20, 21, 200)

    decision = decide(candidate, length_diff=lengths)

    assert decision.passed, decision.reason
    assert 0.5 < decision.candidate_lower < decision.candidate_lc_accuracy
    assert decision.incumbent_accuracy == 0.5  # the root scored against itself: no preference anywhere
    assert decision.difference_lower > 0 and decision.length_explained < 0.05


def test_a_candidate_that_only_got_longer_does_not_pass():
    rng = np.random.default_rng(1)
    # Held-out humans preferred the longer answer on most pairs; the candidate rewards length and nothing else.
    lengths = np.where(rng.random(300) < 0.8, 1, -1) * rng.integers(1, 30, 300)
    candidate = 0.05 * lengths + rng.normal(0, 0.01, 300)

    decision = decide(candidate, length_diff=lengths)

    assert decision.candidate_accuracy == pytest.approx(0.8, abs=0.06)  # the raw figure looks like a win
    assert decision.length_explained > 0.95
    assert not decision.passed and decision.verdict == gate.Verdict.REJECT
    assert "length-controlled" in decision.reason


def test_a_candidate_worse_than_its_incumbent_on_the_same_pairs_is_rejected():
    rng = np.random.default_rng(2)
    incumbent = rng.normal(2.0, 1.0, 200)
    candidate = incumbent - np.abs(rng.normal(1.5, 0.5, 200))  # still mostly right, but behind on each pair

    decision = decide(candidate, incumbent)

    assert decision.candidate_lower > 0.5 and decision.difference_lower < 0
    assert not decision.passed and "paired difference" in decision.reason
    assert decide(candidate, incumbent, tolerance=1.0).passed  # a tolerance forgives it


def test_a_candidate_over_its_kl_budget_is_not_promoted():
    candidate = np.full(100, 3.0)

    assert decide(candidate, kl=4.0, kl_budget=5.0).passed
    decision = decide(candidate, kl=12.5, kl_budget=5.0)
    assert not decision.passed and "12.50 nats exceeds the budget of 5.00" in decision.reason


def test_a_candidate_sent_back_to_its_start_by_the_kl_checks_is_not_promoted():
    candidate, incumbent = np.full(100, 3.0), np.full(100, 3.0)  # an incumbent that is good already

    assert decide(candidate, incumbent, kept_step=12).passed
    decision = decide(candidate, incumbent, kept_step=0)
    assert not decision.passed and "no training step stayed within the KL budget" in decision.reason


def test_length_control_recovers_the_margin_at_equal_length():
    lengths = np.array([-10.0, -5.0, 0.0, 5.0, 10.0])
    control = gate.LengthControl.fit(0.7 + 0.2 * lengths, lengths)

    assert control.slope == pytest.approx(0.2) and control.explained == pytest.approx(1.0)
    assert control.margins == pytest.approx(np.full(5, 0.7))


def _heldout_rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) + "."

    return [{"prompt": f"Tell me about the {rng.choice(WORDS)}. ({i})", "chosen": text(), "rejected": text()}
            for i in range(n)]  # fmt: skip


@pytest.mark.slow
def test_a_candidate_equal_to_its_incumbent_is_promoted_in_at_most_1_of_20_seeded_runs(tiny_model_path):
    """Learning rate 0: a round's fresh LoRA adapter keeps its zero-initialised B matrices, so the candidate
    is its starting policy with a (seeded) random A on top. Each seed draws the adapter and 60 held-out pairs;
    the candidate is scored with the worker's own scoring against the base, the incumbent (round 1: the base)
    likewise, and the gate decides at its defaults."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    config = RoundConfig(learning_rate=0.0)
    promoted = 0
    for seed in range(20):
        torch.manual_seed(seed)
        start = AutoModelForCausalLM.from_pretrained(tiny_model_path)
        candidate = get_peft_model(start, dpo_worker.lora_config(config, start))
        candidate.eval()
        pairs = evaluation.tokenized_pairs(tokenizer, _heldout_rows(seed, 60), max_length=config.max_length)
        logps = evaluation.PairLogps(pairs, pad_token_id=tokenizer.pad_token_id)
        decision = gate.decide(
            candidate_margins=logps.margins(candidate, base, beta=config.beta).numpy(),
            incumbent_margins=logps.margins(base, base, beta=config.beta).numpy(),
            length_diff=[len(c) - len(r) for (_, c), (_, r) in zip(*pairs)],
            kl=0.0,
            **DEFAULTS,
        )
        assert decision.pairs == 60
        promoted += decision.passed

    assert promoted <= 1

"""Per-pair label smoothing (conservative DPO with eps_i = 1 - posterior_i) on TRL, against hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from training import dpo_worker
from training.confidence_dpo import ConfidenceDPOTrainer, smoothed_logsigmoid
from training.config import RoundConfig
from tests.training.test_dpo_math import BETA, ROWS, first_step, load, logp, perturbed, plain_split, trainer_for

POSTERIORS = [1.0, 0.8, 0.55]


def with_posteriors(posteriors):
    return [{**row, "posterior": p} for row, p in zip(ROWS, posteriors)]


def test_smoothed_logsigmoid_is_the_conservative_dpo_term_and_plain_at_eps_zero():
    x = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0], dtype=torch.float64)
    eps = torch.tensor([0.0, 0.1, 0.5, 0.25, 1.0], dtype=torch.float64)

    loss = -smoothed_logsigmoid(x, eps)

    expected = [-(1 - e) * math.log(1 / (1 + math.exp(-v))) - e * math.log(1 / (1 + math.exp(v))) for v, e in zip(x.tolist(), eps.tolist())]
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)
    assert -smoothed_logsigmoid(x, torch.zeros_like(x)) == pytest.approx(-F.logsigmoid(x))
    # The identity behind it: the smoothed loss is the plain one plus eps * x, so eps = 0.5 has no gradient.
    assert loss.tolist() == pytest.approx((-F.logsigmoid(x) + eps * x).tolist(), abs=1e-12)


def test_posterior_settings_are_validated():
    with pytest.raises(ValueError, match="min_posterior"):
        RoundConfig(min_posterior=1.5)
    with pytest.raises(ValueError, match="posterior_smoothing needs loss_type"):
        RoundConfig(posterior_smoothing=True, loss_type="hinge")
    assert RoundConfig.from_dict({"posterior_smoothing": True, "min_posterior": 0.6}).min_posterior == 0.6


def test_confident_pairs_drops_rows_below_the_minimum_posterior():
    dataset = Dataset.from_list(with_posteriors(POSTERIORS))

    kept = dpo_worker.confident_pairs(dataset, RoundConfig(min_posterior=0.7))

    assert kept["posterior"] == [1.0, 0.8]
    assert dpo_worker.confident_pairs(dataset, RoundConfig()) is dataset
    with pytest.raises(ValueError, match="no training pair"):
        dpo_worker.confident_pairs(Dataset.from_list(with_posteriors([0.3, 0.5, 0.6])), RoundConfig(min_posterior=0.9))
    with pytest.raises(ValueError, match="no posterior column"):
        dpo_worker.confident_pairs(Dataset.from_list(ROWS), RoundConfig(posterior_smoothing=True))



def test_the_gate_reads_the_held_out_rows_that_reach_the_minimum_posterior():
    rows = with_posteriors(POSTERIORS)

    assert [r["posterior"] for r in dpo_worker.confident_heldout(rows, RoundConfig(min_posterior=0.7))] == [1.0, 0.8]
    assert dpo_worker.confident_heldout(rows, RoundConfig(posterior_smoothing=True)) is rows  # smoothing alone drops none
    # A row exported without a posterior (no judgment of the round's sources) is no confident evidence.
    assert dpo_worker.confident_heldout([{**ROWS[0], "posterior": None}], RoundConfig(min_posterior=0.5)) == []

@pytest.mark.slow
def test_posterior_column_survives_column_pruning_and_the_collator(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    trainer, _ = trainer_for(
        with_posteriors(POSTERIORS), tokenizer, tmp_path, model=load(tiny_model_path), trainer_class=ConfidenceDPOTrainer
    )

    pruned = trainer._remove_unused_columns(trainer.train_dataset)
    batch = trainer.data_collator([pruned[i] for i in range(len(ROWS))])

    assert batch["posterior"].tolist() == pytest.approx(POSTERIORS)
    assert {"input_ids", "attention_mask", "completion_mask"} <= set(batch)


@pytest.mark.slow
def test_per_pair_loss_matches_hand_computation_from_independent_log_probs(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    policy, reference = perturbed(tiny_model_path), load(tiny_model_path)
    terms = []
    for row, posterior in zip(ROWS, POSTERIORS):
        prompt, chosen, rejected = plain_split(tokenizer, row)
        h = (logp(policy, prompt, chosen) - logp(reference, prompt, chosen)) - (
            logp(policy, prompt, rejected) - logp(reference, prompt, rejected)
        )
        eps = 1 - posterior
        terms.append(
            -(1 - eps) * math.log(1 / (1 + math.exp(-BETA * h))) - eps * math.log(1 / (1 + math.exp(BETA * h)))
        )
    plain = first_step(ROWS, tokenizer, tmp_path / "plain", model=perturbed(tiny_model_path), ref_model=reference)

    logs = first_step(
        with_posteriors(POSTERIORS),
        tokenizer,
        tmp_path / "smoothed",
        model=perturbed(tiny_model_path),
        ref_model=reference,
        trainer_class=ConfidenceDPOTrainer,
    )

    assert logs["loss"] == pytest.approx(sum(terms) / len(terms), abs=1e-5)
    assert abs(logs["loss"] - plain["loss"]) > 1e-4  # the smoothing really changed the loss
    assert logs["rewards/margins"] == pytest.approx(plain["rewards/margins"], abs=1e-6)  # TRL's metrics untouched


@pytest.mark.slow
def test_with_every_posterior_one_the_loss_equals_trls_sigmoid_loss(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    reference = load(tiny_model_path)

    plain = first_step(ROWS, tokenizer, tmp_path / "plain", model=perturbed(tiny_model_path), ref_model=reference)
    smoothed = first_step(
        with_posteriors([1.0] * len(ROWS)),
        tokenizer,
        tmp_path / "smoothed",
        model=perturbed(tiny_model_path),
        ref_model=reference,
        trainer_class=ConfidenceDPOTrainer,
    )

    assert smoothed["loss"] == pytest.approx(plain["loss"], abs=1e-7)
    assert smoothed["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-5)


@pytest.mark.slow
def test_trl_functional_is_restored_after_each_step(tiny_model_path, tmp_path):
    import trl.trainer.dpo_trainer as trl_dpo
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    first_step(
        with_posteriors(POSTERIORS),
        tokenizer,
        tmp_path,
        model=load(tiny_model_path),
        lora=True,
        trainer_class=ConfidenceDPOTrainer,
    )

    assert trl_dpo.F is F


def test_the_round_form_offers_both_posterior_options():
    from training.forms import RoundConfigForm

    initial = {name: field.initial for name, field in RoundConfigForm().fields.items() if field.initial is not None}
    form = RoundConfigForm({**initial, "lora": "on", "min_posterior": "0.7", "posterior_smoothing": "on"})

    assert form.is_valid(), form.errors
    assert (form.config.min_posterior, form.config.posterior_smoothing) == (0.7, True)
    by_posterior = RoundConfigForm({**initial, "lora": "on", "winner": "posterior"})
    assert by_posterior.is_valid(), by_posterior.errors
    assert by_posterior.config.aggregation["winner"] == "posterior"
    refused = RoundConfigForm({**initial, "loss_type": "ipo", "posterior_smoothing": "on"})
    assert not refused.is_valid() and "posterior_smoothing needs loss_type" in str(refused.errors)

"""The worker's KL budget: the final weights estimated first; over the budget, the latest kept point within it."""

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerControl, TrainerState

from training import dpo_worker, evaluation
from training.config import RoundConfig

pytestmark = pytest.mark.slow

PROMPTS = ["Tell me about the sea.", "Describe a red kite.", "Say hi"]


def _nudge(model, scale: float, seed: int) -> None:
    """Move every LoRA B matrix off zero: the adapter starts to change the policy."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def _reset(model) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.zero_()


def _lora_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def _replay(model, config, reference, tokenizer):
    """The callback through a round of 4 steps (kl_checks 2: points at steps 2 and 4): a small move of the
    weights in step 2, a large one in step 3."""
    _reset(model)
    callback = dpo_worker._kl_budget_callback(config, reference=reference, tokenizer=tokenizer, prompts=PROMPTS)
    state, control = TrainerState(max_steps=4), TrainerControl()
    callback.on_train_begin(None, state, control, model=model)
    for step in range(1, 5):
        if step == 2:
            _nudge(model, 0.001, seed=1)
        if step == 3:
            _nudge(model, 1.0, seed=2)
        state.global_step = step
        callback.on_step_end(None, state, control, model=model)
        assert not callback.checks  # nothing is sampled while the round trains
    callback.on_train_end(None, state, control, model=model)
    assert not control.should_training_stop
    return callback


@pytest.fixture
def moves(tiny_model_path):
    """The tiny model with a LoRA adapter, and the KL of its small and its large move (measured directly)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    torch.manual_seed(0)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model = get_peft_model(start, dpo_worker.lora_config(RoundConfig(), start))

    def kl() -> float:
        model.eval()
        return evaluation.sample_eval(model, reference, tokenizer, PROMPTS, max_new_tokens=8, seed=3)["kl"]

    _nudge(model, 0.001, seed=1)
    small, small_weights = kl(), _lora_state(model)
    _nudge(model, 1.0, seed=2)
    large, large_weights = kl(), _lora_state(model)
    assert large > 2 * abs(small) + 0.01  # the second move is far bigger than the first
    return model, reference, tokenizer, (small, small_weights), (large, large_weights)


def _config(budget: float) -> RoundConfig:
    return RoundConfig(kl_budget=budget, kl_checks=2, eval_max_new_tokens=8, seed=3)


def test_final_weights_within_the_budget_are_the_candidate_after_one_estimate(moves):
    model, reference, tokenizer, _, (large, large_weights) = moves

    callback = _replay(model, _config(large + 1.0), reference, tokenizer)

    assert [(c["step"], c["within"]) for c in callback.checks] == [(4, True)]
    assert callback.kept_step == 4 and callback.checks[0]["kl"] == pytest.approx(large, rel=1e-4)
    assert callback.kept_estimate["kl"] == callback.checks[0]["kl"]
    final = _lora_state(model)
    assert all(torch.equal(final[name], large_weights[name]) for name in large_weights)
    assert model.training  # handed back to the trainer in training mode


def test_final_weights_over_the_budget_give_way_to_the_latest_point_within_it(moves):
    model, reference, tokenizer, (small, small_weights), (large, _) = moves

    callback = _replay(model, _config((large + abs(small)) / 2), reference, tokenizer)

    assert callback.kept_step == 2
    assert [(c["step"], c["within"]) for c in callback.checks] == [(4, False), (2, True)]
    assert callback.checks[0]["kl"] == pytest.approx(large, rel=1e-4)
    assert callback.checks[1]["kl"] == pytest.approx(small, abs=1e-5)
    # The estimate of the weights kept is handed to the evaluation, which then does not sample it again.
    assert callback.kept_estimate["kl"] == callback.checks[1]["kl"] and callback.kept_estimate["samples"] == len(PROMPTS)
    restored = _lora_state(model)
    assert all(torch.equal(restored[name], small_weights[name]) for name in small_weights)
    assert model.training

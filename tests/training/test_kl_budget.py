"""The worker's KL checks while training: past the budget, back to the last check within it, and stop."""

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


def test_a_check_over_the_budget_restores_the_last_weights_within_it_and_stops(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    torch.manual_seed(0)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model = get_peft_model(start, dpo_worker.lora_config(RoundConfig(), start))

    def kl() -> float:
        model.eval()
        return evaluation.sample_eval(model, reference, tokenizer, PROMPTS, max_new_tokens=8, seed=3)["kl"]

    _nudge(model, 0.001, seed=1)
    small = kl()
    small_weights = _lora_state(model)
    _nudge(model, 1.0, seed=2)
    large = kl()
    assert large > 2 * abs(small) + 0.01  # the second move is far bigger than the first
    budget = (large + abs(small)) / 2
    config = RoundConfig(kl_budget=budget, kl_checks=2, eval_max_new_tokens=8, seed=3)

    # Replay: the same two moves from the start, with a check after each (max_steps 4: checks at steps 2 and 4).
    _reset(model)
    callback = dpo_worker._kl_budget_callback(config, reference=reference, tokenizer=tokenizer, prompts=PROMPTS)
    state, control = TrainerState(max_steps=4), TrainerControl()
    callback.on_train_begin(None, state, control, model=model)
    _nudge(model, 0.001, seed=1)
    state.global_step = 2
    callback.on_step_end(None, state, control, model=model)
    assert (callback.kept_step, control.should_training_stop) == (2, False)
    _nudge(model, 1.0, seed=2)
    state.global_step = 3  # not a check
    callback.on_step_end(None, state, control, model=model)
    assert len(callback.checks) == 1
    state.global_step = 4
    callback.on_step_end(None, state, control, model=model)

    assert control.should_training_stop is True
    assert callback.kept_step == 2
    assert [(c["step"], c["within"]) for c in callback.checks] == [(2, True), (4, False)]
    assert callback.checks[0]["kl"] == pytest.approx(small, abs=1e-5)
    assert callback.checks[1]["kl"] == pytest.approx(large, rel=1e-4)
    # The estimate of the weights kept is handed to the evaluation, which then does not sample it again.
    assert callback.kept_estimate["kl"] == callback.checks[0]["kl"] and callback.kept_estimate["samples"] == len(PROMPTS)
    restored = _lora_state(model)
    assert all(torch.equal(restored[name], small_weights[name]) for name in small_weights)
    assert model.training  # handed back to the trainer in training mode

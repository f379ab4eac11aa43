"""The loop on a real instruct checkpoint (SmolLM2-135M-Instruct): its chat template with a default
system prompt, pad == EOS, GQA and tied embeddings, LoRA on its attention projections, served by vLLM.

Slow and kept small: few prompts, few tokens, two training steps.
"""

import json
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer

from generation import services as generation_services
from generation.backends import encode
from generation.models import Completion, ModelVersion
from generation.selectors import prompt_model_input
from labeling import services as labeling_services
from labeling.models import Campaign, Split
from tests.training.conftest import PairFactory
from training import evaluation, export, services
from training.config import RoundConfig
from training.dpo_worker import attention_projections, build_trainer, load_model
from training.models import RoundStatus

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
GOOD = ["Paris is the capital of France.", "Water boils at 100 degrees Celsius at sea level."]
QUESTIONS = ["What is the capital of France?", "At what temperature does water boil?"]

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def real_policy(campaign: Campaign, real_model_path: Path) -> ModelVersion:
    policy = generation_services.model_version_register(name="smollm2", base_path=str(real_model_path))
    labeling_services.campaign_set_active_policy(campaign=campaign, policy_id=policy.pk)
    campaign.refresh_from_db()
    return policy


@pytest.fixture
def real_pairs(campaign: Campaign, real_policy: ModelVersion) -> PairFactory:
    """Two train pairs (a plain prompt and a chat prompt) and two held-out ones: a good answer against babble."""
    factory = PairFactory(campaign=campaign, policy=real_policy)
    factory.pair(votes=["a"], text=QUESTIONS[0], a=GOOD[0], b="france france france")
    factory.pair(votes=["b"], messages=[{"role": "user", "content": QUESTIONS[1]}], a="boil boil boil", b=GOOD[1])
    for question, good in zip(QUESTIONS, GOOD):
        factory.pair(votes=["a"], text=f"{question} (held out)", a=good, b="sea sea sea", split=Split.HELDOUT)
    return factory


def _rows(campaign: Campaign, split: str) -> list[dict]:
    policy = export.AggregationPolicy()
    return list(export.preference_rows(campaign=campaign, split=split, policy=policy, conversational=True))


def test_generation_training_and_evaluation_condition_on_the_same_templated_prompt(
    campaign, real_policy, real_pairs, real_model_path, tmp_path
):
    tokenizer = AutoTokenizer.from_pretrained(real_model_path)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    rows = _rows(campaign, Split.TRAIN)
    spec = {
        "policy": {"base_path": str(real_model_path), "adapter_path": ""},
        "reference": {"base_path": str(real_model_path), "adapter_path": ""},
        "output_dir": str(tmp_path),
    }
    config = RoundConfig(batch_size=2, max_length=256)
    trainer = build_trainer(spec, config, train_dataset=datasets.Dataset.from_list(rows))
    tokenized = list(trainer.train_dataset)
    assert len(tokenized) == len(rows) == 2

    for row, example in zip(rows, tokenized):
        prompt = campaign.prompts.get(pk=row["prompt_id"])
        served = encode(prompt_model_input(prompt), base_path=real_policy.base_path)  # what vLLM is given
        assert example["prompt_ids"] == served == evaluation.prompt_ids(tokenizer, row["prompt"])
        assert tokenizer.decode(served).startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
        assert tokenizer.decode(served).endswith("<|im_start|>assistant\n")
        # Evaluation splits each pair exactly as TRL does.
        head, (chosen, rejected) = evaluation.split_completions(
            tokenizer, row["prompt"], [row["chosen"], row["rejected"]], config.max_length
        )
        assert (head, chosen, rejected) == (example["prompt_ids"], example["chosen_ids"], example["rejected_ids"])
        # pad == EOS, yet the answers end with EOS (then the template's newline) and it is trained on.
        for ids in (chosen, rejected):
            assert ids[-2:] == [tokenizer.eos_token_id, *tokenizer.encode("\n", add_special_tokens=False)]

    batch = trainer.data_collator(tokenized)
    eos_in_loss = (batch["input_ids"] == tokenizer.eos_token_id) & batch["completion_mask"].bool()
    assert eos_in_loss.sum(dim=1).tolist() == [1] * 4  # chosen, chosen, rejected, rejected: each its own EOS

    # LoRA goes on this architecture's attention projections, found in the model (not a list written for one).
    assert sorted(trainer.model.peft_config["default"].target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_lora_targets_follow_the_architecture(real_model_path, tiny_model_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    assert attention_projections(load_model(str(real_model_path))) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32))
    assert attention_projections(gpt2) == ["c_attn", "c_proj"]


def test_a_prompt_longer_than_the_context_is_dropped_from_training_and_evaluation_alike(real_model_path):
    tokenizer = AutoTokenizer.from_pretrained(real_model_path)
    long_prompt = [{"role": "user", "content": "word " * 300}]
    assert len(evaluation.prompt_ids(tokenizer, long_prompt)) > 256
    chosen, rejected = [{"role": "assistant", "content": GOOD[0]}], [{"role": "assistant", "content": "no"}]
    assert evaluation.split_completions(tokenizer, long_prompt, [chosen, rejected], 256) is None  # as TRL drops it


def test_eos_stops_generation_and_is_not_shown(campaign, real_policy, real_model_path):
    labeling_services.prompts_import(
        campaign=campaign, stream=[json.dumps({"prompt": q}) + "\n" for q in QUESTIONS], source="test.jsonl"
    )
    job = generation_services.generation_job_create(
        campaign=campaign, policy=real_policy, temperature=0.7, max_tokens=96, seed=1
    )
    job = generation_services.generation_job_run(job=job)
    assert job.status == "succeeded", job.error
    eos = AutoTokenizer.from_pretrained(real_model_path).eos_token_id
    completions = list(Completion.objects.filter(job=job))
    assert len(completions) == 2 * len(QUESTIONS)
    stopped = [c for c in completions if c.finish_reason == "stop"]
    assert stopped, [c.text for c in completions]  # short factual questions get short answers
    for completion in stopped:
        assert completion.token_ids[-1] == eos and completion.token_ids.count(eos) == 1
    for completion in completions:
        assert completion.text.strip() and "<|im_end|>" not in completion.text and "<|im_start|>" not in completion.text


def test_a_round_trains_a_lora_adapter_that_vllm_serves_and_completions_record_its_version(
    campaign, real_policy, real_pairs, artifacts
):
    config = RoundConfig.from_dict(
        {"learning_rate": 5e-3, "batch_size": 2, "max_length": 256, "eval_prompts": 1, "eval_max_new_tokens": 8,
         "gate_min_accuracy": 0.0, "regenerate": False,
         # Two held-out pairs are too few for the evidence gate; this test is about serving the adapter.
         "gate_min_heldout_pairs": 1, "gate_tolerance": 1.0, "kl_budget": 1e6}
    )
    training_round = services.round_start(campaign=campaign, config=config)
    services.round_execute(round_id=training_round.pk)
    training_round.refresh_from_db()
    assert training_round.status == RoundStatus.PROMOTED, training_round.error or training_round.log_tail
    adapter = training_round.output_version
    adapter_config = json.loads((Path(adapter.adapter_path) / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert adapter.base_path == real_policy.base_path
    assert training_round.eval_results["pairs"] == 2 and training_round.eval_results["samples"] == 1

    campaign.refresh_from_db()
    assert campaign.active_policy == adapter
    # Greedy A/B: the base on side a, the adapter (through LoRARequest) on side b.
    job = generation_services.generation_job_create(
        campaign=campaign, policy=real_policy, policy_b=adapter, temperature=0.0, max_tokens=24, limit=2
    )
    job = generation_services.generation_job_run(job=job)
    assert job.status == "succeeded", job.error
    sides = {c.model_version_id for c in Completion.objects.filter(job=job)}
    assert sides == {real_policy.pk, adapter.pk}
    adapter_samples = Completion.objects.filter(job=job, model_version=adapter)
    assert adapter_samples.count() == 2 and all(c.backend == "vllm" for c in adapter_samples)
    assert job.skipped_identical < 2  # the adapter changed at least one greedy answer: vLLM applied it

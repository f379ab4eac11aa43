"""DPO as TRL 1.16 computes it, checked against the paper on the tiny model (fp32, CPU)."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOTrainer

from training import dpo_worker, evaluation
from training.config import RoundConfig

pytestmark = pytest.mark.slow

BETA = 0.1
ROWS = [
    {"prompt": "Tell me about the sea.", "chosen": " The sea is wide and blue.", "rejected": " sea sea sea"},
    {"prompt": "Say hi", "chosen": " there, friend.", "rejected": " no"},
    {"prompt": "Name a color.", "chosen": " Red.", "rejected": " The color of a cold morning is grey."},
]
CHAT_ROWS = [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
        "chosen": [{"role": "assistant", "content": "Hi there."}],
        "rejected": [{"role": "assistant", "content": "no"}],
    },
    {
        "prompt": [{"role": "user", "content": "Tell me about the sea."}],
        "chosen": [{"role": "assistant", "content": "It is wide."}],
        "rejected": [{"role": "assistant", "content": " sea sea"}],
    },
]
# "Hello wor" ends inside the token " world": BPE merges the prompt's end with the completion's start.
MERGING_ROWS = [
    {"prompt": "Hello wor", "chosen": "ld.", "rejected": "ds are cheap."},
    {"prompt": "Say h", "chosen": "i there", "rejected": "ello"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    return AutoTokenizer.from_pretrained(tiny_model_path)


def load(path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def perturbed(path, seed: int = 0) -> torch.nn.Module:
    """The tiny model with seeded noise on its weights: a policy that differs from the reference."""
    model = load(path)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


class Logs(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.steps.append(dict(logs))


def trainer_for(
    rows, tokenizer, tmp_path, *, model, ref_model=None, lora=False, steps=1, lr=1e-6, batch=None, trainer_class=DPOTrainer
):
    config = RoundConfig(beta=BETA, learning_rate=lr, lora=lora, batch_size=batch or len(rows), max_length=128)
    logs = Logs()
    trainer = trainer_class(
        model=model,
        ref_model=ref_model,
        args=dpo_worker.dpo_args(config, tmp_path, max_steps=steps),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=dpo_worker.lora_config(config, model) if lora else None,
        callbacks=[logs],
    )
    return trainer, logs


def first_step(rows, tokenizer, tmp_path, **kwargs) -> dict:
    """What TRL logs for one step whose batch is all of `rows` (computed before the update)."""
    trainer, logs = trainer_for(rows, tokenizer, tmp_path, **kwargs)
    trainer.train()
    return logs.steps[0]


def logp(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """log p(completion | prompt): one unpadded forward, the sum of the completion tokens' log-probs."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    token_logps = torch.log_softmax(logits, dim=-1)[torch.arange(ids.shape[1] - 1), ids[0, 1:]]
    return float(token_logps[len(prompt_ids) - 1 :].sum())


def plain_split(tokenizer, row) -> tuple[list[int], list[int], list[int]]:
    """Prompt, chosen and rejected ids for rows whose prompt ends on a token boundary."""
    prompt = tokenizer(text=row["prompt"])["input_ids"]
    pieces = []
    for key in ("chosen", "rejected"):
        full = tokenizer(text=row["prompt"] + row[key] + tokenizer.eos_token)["input_ids"]
        assert full[: len(prompt)] == prompt, "test data must not merge across the prompt boundary"
        pieces.append(full[len(prompt) :])
    return prompt, *pieces


@pytest.mark.parametrize("lora", [False, True])
def test_first_step_loss_is_ln2_and_rewards_zero_when_policy_equals_reference(
    tiny_model_path, tokenizer, tmp_path, lora
):
    logs = first_step(ROWS, tokenizer, tmp_path, model=load(tiny_model_path), lora=lora)

    assert logs["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert logs["rewards/chosen"] == 0
    assert logs["rewards/rejected"] == 0
    assert logs["rewards/margins"] == 0


def test_trl_loss_equals_dpo_paper_eq7_from_independent_log_probs(tiny_model_path, tokenizer, tmp_path):
    policy, reference = perturbed(tiny_model_path), load(tiny_model_path)
    terms, margins = [], []
    for row in ROWS:
        prompt, chosen, rejected = plain_split(tokenizer, row)
        chosen_ratio = logp(policy, prompt, chosen) - logp(reference, prompt, chosen)
        rejected_ratio = logp(policy, prompt, rejected) - logp(reference, prompt, rejected)
        margins.append(BETA * (chosen_ratio - rejected_ratio))
        terms.append(-F.logsigmoid(torch.tensor(margins[-1], dtype=torch.float64)).item())
    expected_loss = sum(terms) / len(terms)

    logs = first_step(ROWS, tokenizer, tmp_path, model=perturbed(tiny_model_path), ref_model=reference)

    assert abs(expected_loss - math.log(2)) > 1e-3  # the policy really differs from the reference
    assert logs["loss"] == pytest.approx(expected_loss, abs=1e-5)
    assert logs["rewards/margins"] == pytest.approx(sum(margins) / len(margins), abs=1e-5)


def test_evaluation_log_probs_match_the_unpadded_forward(tiny_model_path, tokenizer):
    model = perturbed(tiny_model_path)
    pairs = []
    for row in ROWS:
        prompt, chosen, rejected = plain_split(tokenizer, row)
        pairs += [(prompt, chosen), (prompt, rejected)]

    batched = evaluation.sequence_logps(model, pairs, pad_token_id=tokenizer.pad_token_id, batch_size=4)

    assert batched.tolist() == pytest.approx([logp(model, p, c) for p, c in pairs], abs=1e-4)


def test_pair_log_probs_are_computed_once_per_model_and_give_the_eq7_margins(tiny_model_path, tokenizer):
    policy, reference = perturbed(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    splits = [plain_split(tokenizer, row) for row in ROWS]
    pairs = ([(p, c) for p, c, _ in splits], [(p, r) for p, _, r in splits])
    passes = {"policy": 0, "reference": 0}
    for name, model in (("policy", policy), ("reference", reference)):
        model.register_forward_hook(lambda *_, name=name: passes.__setitem__(name, passes[name] + 1))
    logps = evaluation.PairLogps(pairs, pad_token_id=tokenizer.pad_token_id, batch_size=64)

    margins = logps.margins(policy, reference, beta=0.1)
    again = logps.margins(policy, reference, beta=0.1)  # the evaluation asks twice when the reference is the base
    assert passes == {"policy": 1, "reference": 1}  # one batched pass each, however often they are asked

    expected = [
        0.1 * ((logp(policy, p, c) - logp(reference, p, c)) - (logp(policy, p, r) - logp(reference, p, r)))
        for p, c, r in splits
    ]
    assert margins.tolist() == pytest.approx(expected, abs=1e-4) and torch.equal(margins, again)
    assert logps.margins(policy, policy, beta=0.1).tolist() == [0.0] * len(splits)


def test_swapping_chosen_and_rejected_negates_the_margin(tiny_model_path, tokenizer, tmp_path):
    swapped = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in ROWS]
    reference = load(tiny_model_path)

    logs = first_step(ROWS, tokenizer, tmp_path / "a", model=perturbed(tiny_model_path), ref_model=reference)
    logs_swapped = first_step(swapped, tokenizer, tmp_path / "b", model=perturbed(tiny_model_path), ref_model=reference)

    assert logs["rewards/margins"] != 0
    assert logs_swapped["rewards/margins"] == pytest.approx(-logs["rewards/margins"], abs=1e-6)
    assert logs_swapped["rewards/chosen"] == pytest.approx(logs["rewards/rejected"], abs=1e-6)
    assert logs_swapped["rewards/accuracies"] == pytest.approx(1 - logs["rewards/accuracies"], abs=1e-6)


def collated(rows, tokenizer, tmp_path):
    """TRL's own tokenization and collation of `rows`: the dataset it prepared, batched by its collator."""
    trainer, _ = trainer_for(rows, tokenizer, tmp_path, model=load(tokenizer.name_or_path))
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    return examples, trainer.data_collator(examples)


def full_text_ids(tokenizer, prompt, completion) -> list[int]:
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    return tokenizer(text=prompt + completion + tokenizer.eos_token)["input_ids"]


@pytest.mark.parametrize("rows", [ROWS, CHAT_ROWS, MERGING_ROWS], ids=["string", "chat", "bpe-merge"])
def test_completion_mask_covers_exactly_the_completion_tokens(tiny_model_path, tokenizer, tmp_path, rows):
    examples, batch = collated(rows, tokenizer, tmp_path)
    n = len(rows)

    for i, row in enumerate(rows):
        for half, key in ((0, "chosen"), (1, "rejected")):
            j = i + half * n  # the collator stacks all chosen sequences, then all rejected ones
            ids = batch["input_ids"][j][batch["attention_mask"][j].bool()].tolist()
            mask = batch["completion_mask"][j][batch["attention_mask"][j].bool()].tolist()
            full = full_text_ids(tokenizer, row["prompt"], row[key])
            start = mask.index(1)
            # The model sees exactly the tokenized prompt+completion, and the mask is one run to its end...
            assert ids == full
            assert mask == [0] * start + [1] * (len(ids) - start)
            assert batch["completion_mask"][j][~batch["attention_mask"][j].bool()].sum() == 0
            # ...that starts where the prompt's own tokens stop matching the full sequence.
            prompt_ids = evaluation.prompt_ids(tokenizer, row["prompt"])
            assert start == min(
                evaluation._common_prefix_length(prompt_ids, full_text_ids(tokenizer, row["prompt"], row[k]))
                for k in ("chosen", "rejected")
            )
            # Our evaluation splits the pair the same way, so it scores what training optimized.
            head, tails = evaluation.split_completions(tokenizer, row["prompt"], [row["chosen"], row["rejected"]])
            assert (head, tails[half]) == (examples[i]["prompt_ids"], examples[i][f"{key}_ids"])


def test_plain_prompts_on_a_token_boundary_mask_the_completion_text_and_eos(tiny_model_path, tokenizer, tmp_path):
    _, batch = collated(ROWS, tokenizer, tmp_path)

    masked = batch["input_ids"][0][batch["completion_mask"][0].bool()].tolist()

    assert tokenizer.decode(masked) == ROWS[0]["chosen"] + tokenizer.eos_token


def test_merged_boundary_token_is_trained_as_part_of_the_completion(tiny_model_path, tokenizer, tmp_path):
    _, batch = collated(MERGING_ROWS, tokenizer, tmp_path)

    masked = batch["input_ids"][0][batch["completion_mask"][0].bool()].tolist()
    unmasked = batch["input_ids"][0][(batch["attention_mask"][0] - batch["completion_mask"][0]).bool()].tolist()

    assert tokenizer.decode(masked) == " world." + tokenizer.eos_token
    assert tokenizer.decode(unmasked) == "Hello"


def test_chat_completion_mask_starts_after_the_assistant_header(tiny_model_path, tokenizer, tmp_path):
    _, batch = collated(CHAT_ROWS, tokenizer, tmp_path)

    masked = batch["input_ids"][0][batch["completion_mask"][0].bool()].tolist()

    assert tokenizer.decode(masked) == "Hi there.<|end|>\n"


def test_a_few_steps_on_a_fixed_pair_raise_the_chosen_over_rejected_log_ratio(tiny_model_path, tokenizer, tmp_path):
    row = ROWS[0]
    trainer, logs = trainer_for(
        [row] * 4, tokenizer, tmp_path, model=load(tiny_model_path), lora=True, steps=5, lr=5e-3, batch=2
    )
    trainer.train()
    policy, reference = trainer.model.eval(), load(tiny_model_path)
    prompt, chosen, rejected = plain_split(tokenizer, row)

    policy_gap = logp(policy, prompt, chosen) - logp(policy, prompt, rejected)
    reference_gap = logp(reference, prompt, chosen) - logp(reference, prompt, rejected)

    assert policy_gap > reference_gap
    assert logs.steps[-1]["loss"] < math.log(2)

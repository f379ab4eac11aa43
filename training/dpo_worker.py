"""One DPO round in its own process: `python -m training.dpo_worker SPEC.json`.

The parent (a Celery task on the `training` queue) writes SPEC.json, starts this
module (through settings.TRAINING_LAUNCHER, e.g. `accelerate launch --config_file
zero3.yaml`, for many GPUs), and reads our stdout. We report through JSON lines
prefixed with EVENT_PREFIX rather than writing to the database ourselves:

- the worker needs no database credentials or Django, so it runs the same under
  `accelerate launch`, on another host, or in a container with only the GPU;
- only rank 0 speaks, so many ranks never race on the same rows;
- the parent owns the round's state, so it can kill us (cancel) at any moment,
  even mid-step, without leaving a half-written row behind.

The spec: {"train_path", "heldout_path" (or null), "output_dir",
"policy": {"base_path", "adapter_path"}, "reference": {"base_path", "adapter_path"},
"incumbent" and "base" (the same shape: the policy the candidate must beat, and
the common base both are scored against; default the starting policy and the
reference), "config": RoundConfig.as_dict()}.
"""

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from training.config import RoundConfig

EVENT_PREFIX = "@dpo-event "


def emit(event: str, **payload: Any) -> None:
    print(EVENT_PREFIX + json.dumps({"event": event, **payload}), flush=True)


def _precision(config: RoundConfig) -> dict[str, bool]:
    import torch

    if config.precision == "bf16" or (
        config.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ):
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": False}


def dpo_args(config: RoundConfig, output_dir: str | Path, **overrides: Any):
    """TRL's DPOConfig for a round: the one place our config maps onto TRL's."""
    import torch
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir),
        beta=config.beta,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        loss_type=[config.loss_type],
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        **_precision(config),
        **overrides,
    )


def load_model(
    base_path: str, adapter_path: str = "", *, trainable: bool = False, merge: bool = False, device: str | None = None
):
    """A causal LM from a ModelVersion's paths; a LoRA adapter stays separate unless `merge`.

    `device` is for evaluation only: for training, the Trainer (and accelerate) place the model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path, is_trainable=trainable and not merge)
        if merge:
            model = model.merge_and_unload()
            # PEFT froze the base weights when it put the adapter on; merged, the model trains whole.
            model.requires_grad_(trainable)
    return model.to(device) if device else model


def attention_projections(model) -> list[str]:
    """The names of the projection layers inside the model's attention blocks (q/k/v/o_proj for Llama,
    c_attn/c_proj for GPT-2, ...): LoRA's targets follow the architecture instead of a list written for one."""
    import torch
    from transformers.pytorch_utils import Conv1D

    names = {
        child_name
        for module in model.modules()
        if type(module).__name__.endswith("Attention")
        for child_name, child in module.named_children()
        if isinstance(child, (torch.nn.Linear, Conv1D))
    }
    if not names:
        raise ValueError(f"no attention projections found in {type(model).__name__}: set lora_target_modules")
    return sorted(names)


def lora_config(config: RoundConfig, model):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules) or attention_projections(model),
        task_type="CAUSAL_LM",
    )


def _event_callback():
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Streams the trainer's logs and progress to the parent as event lines (rank 0 only)."""

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                emit("progress", step=0, max_steps=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                emit("progress", step=state.global_step, max_steps=state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                values = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                emit("log", step=state.global_step, epoch=state.epoch, values=values)

    return EventCallback()


def samples_and_kl(config: RoundConfig, policy, reference, tokenizer, prompts: list) -> dict[str, Any]:
    """The gate's KL estimate (and sample lengths): one seeded sample per held-out prompt, scored by both models."""
    from training import evaluation

    return evaluation.sample_eval(
        policy,
        reference,
        tokenizer,
        prompts,
        max_new_tokens=config.eval_max_new_tokens,
        seed=config.seed,
        batch_size=config.eval_batch_size,
    )


def _trainable_state(model) -> dict[str, Any]:
    """A copy of the trainable weights, on the CPU: a full fine-tune's points must not fill the GPU."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model, state: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in state:
                parameter.copy_(state[name])


def _kl_budget_callback(config: RoundConfig, *, reference, tokenizer, prompts: list):
    """Keeps a round within config.kl_budget (config.kl_checks points: after 1/2**(n-1), ..., 1/2 and all of
    its steps).

    While it trains, the callback keeps the trainable weights of each point before the last. When training
    ends it estimates the KL of the final weights (the gate's own estimate: training.evaluation.sample_eval on
    the same held-out prompts with the same seed); within the budget, as a round usually is, that is the only
    estimate. Over it, it estimates the kept points from the latest back, and the first within the budget
    becomes the candidate's weights (none: the round's start). Estimating at the end rather than at each
    point while training costs one estimate instead of kl_checks in the usual case; sampling a few prompts
    token by token was most of a small round's time on a GPU (bench/gpu_round.py). Single process only:
    under a multi-process launcher the gate alone enforces the budget.
    """
    from transformers import TrainerCallback

    class KLBudget(TrainerCallback):
        def __init__(self) -> None:
            self.checks: list[dict[str, Any]] = []  # the estimates made, latest weights first
            self.kept_step = 0
            self.kept_estimate: dict[str, Any] | None = None  # the full estimate at kept_step (None at step 0)
            self._points: dict[int, dict[str, Any]] = {}
            self._at: set[int] = set()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._points = {0: _trainable_state(model)}
            # Halving back from the end (..., 1/4, 1/2, all of the steps): a round's KL grows fastest at its
            # start, while the optimizer's fresh moments take full-size steps.
            self._at = {max(1, math.ceil(state.max_steps / 2**k)) for k in range(config.kl_checks)}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step in self._at and state.global_step < state.max_steps:
                self._points[state.global_step] = _trainable_state(model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            model.eval()
            final = state.global_step
            for step in [final, *sorted((s for s in self._points if 0 < s < final), reverse=True)]:
                if step != final:
                    _load_trainable_state(model, self._points[step])
                estimate = samples_and_kl(config, model, reference, tokenizer, prompts)
                within = estimate["kl"] <= config.kl_budget
                self.checks.append({"step": step, "kl": estimate["kl"], "within": within})
                emit("kl_check", step=step, kl=estimate["kl"], budget=config.kl_budget, within=within)
                if within:
                    self.kept_step, self.kept_estimate = step, estimate
                    break
            else:
                _load_trainable_state(model, self._points[0])
            self._points = {}
            model.train()

    return KLBudget()


def build_trainer(spec: dict[str, Any], config: RoundConfig, *, train_dataset, callbacks=()):
    """The DPOTrainer for a round: policy from spec["policy"], reference from spec["reference"].

    With LoRA and a reference equal to the starting policy, TRL needs no second
    model (it disables the new adapter, or copies a continued one, for the
    reference pass); otherwise the reference is loaded and passed explicitly.
    """
    from transformers import AutoTokenizer, PrinterCallback

    if config.posterior_smoothing:
        from training.confidence_dpo import ConfidenceDPOTrainer as Trainer
    else:
        from trl import DPOTrainer as Trainer

    policy, reference = spec["policy"], spec["reference"]
    tokenizer = AutoTokenizer.from_pretrained(policy["base_path"])
    continue_adapter = config.lora and bool(policy["adapter_path"])
    model = load_model(policy["base_path"], policy["adapter_path"], trainable=True, merge=not config.lora)
    ref_model = None
    if reference != policy or not config.lora:
        ref_model = load_model(reference["base_path"], reference["adapter_path"], merge=True)
    trainer = Trainer(
        model=model,
        ref_model=ref_model,
        args=dpo_args(config, Path(spec["output_dir"]) / "checkpoints"),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config, model) if config.lora and not continue_adapter else None,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # our EventCallback reports the same logs
    return trainer


def confident(row: dict[str, Any], min_posterior: float) -> bool:
    """Whether the row has a posterior and it reaches min_posterior: the round keeps it."""
    return row.get("posterior") is not None and row["posterior"] >= min_posterior


def confident_pairs(dataset, config: RoundConfig):
    """The training rows the round keeps: those whose posterior reaches config.min_posterior."""
    if config.min_posterior <= 0 and not config.posterior_smoothing:
        return dataset
    if "posterior" not in dataset.column_names:
        raise ValueError("the training file has no posterior column (exported before reliability): export it again")
    if config.min_posterior <= 0:
        return dataset
    kept = dataset.filter(lambda row: confident(row, config.min_posterior))
    emit("selected", split="training", kept=len(kept), dropped=len(dataset) - len(kept), min_posterior=config.min_posterior)
    if len(kept) == 0:
        raise ValueError(f"no training pair has a posterior of at least {config.min_posterior}")
    return kept


def confident_heldout(rows: list[dict[str, Any]], config: RoundConfig) -> list[dict[str, Any]]:
    """The held-out rows the gate reads: with a min_posterior, those that reach it, as in training. The labels
    the reliability model doubts are then not held against the candidate (nor for it): a noisy crowd's wrong
    answers would otherwise pull every policy's measured accuracy toward chance."""
    if config.min_posterior <= 0:
        return rows
    kept = [row for row in rows if confident(row, config.min_posterior)]
    emit("selected", split="held-out", kept=len(kept), dropped=len(rows) - len(kept), min_posterior=config.min_posterior)
    return kept


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def heldout_prompts(rows: list[dict[str, Any]], limit: int) -> list:
    """The first `limit` distinct prompts of the held-out rows, in snapshot order: the KL estimate's prompts."""
    prompts, seen = [], set()
    for row in rows:
        key = json.dumps(row["prompt"], sort_keys=True)
        if key not in seen and len(prompts) < limit:
            seen.add(key)
            prompts.append(row["prompt"])
    return prompts


def evaluate(
    spec: dict[str, Any], config: RoundConfig, *, model_dir: Path, rows: list[dict[str, Any]], estimate: dict | None
) -> dict[str, Any]:
    """Evaluate the saved artifact (what will be served) against the round's reference on the held-out `rows`.

    `estimate` is the KL check's samples_and_kl of the very weights saved (the last check within the budget),
    when there was one: the same prompts, seed and weights, so it is not sampled a second time."""
    import torch
    from transformers import AutoTokenizer

    from training import evaluation

    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy_spec = spec["policy"]
    if config.lora:
        policy = load_model(policy_spec["base_path"], str(model_dir), device=device)
    else:
        policy = load_model(str(model_dir), device=device)
    policy.eval()
    loaded: dict[tuple[str, str], Any] = {}

    def frozen(version: dict[str, str]):
        # The round's reference, the incumbent and the scoring base are often one model: load each once.
        key = (version["base_path"], version["adapter_path"])
        if key not in loaded:
            loaded[key] = load_model(*key, merge=True, device=device).eval()
        return loaded[key]

    reference = frozen(spec["reference"])
    tokenizer = AutoTokenizer.from_pretrained(policy_spec["base_path"])
    pairs = evaluation.tokenized_pairs(tokenizer, rows, max_length=config.max_length)
    logps = evaluation.PairLogps(pairs, pad_token_id=tokenizer.pad_token_id, batch_size=config.eval_batch_size)
    results = evaluation.preference_eval(policy, reference, logps, beta=config.beta)
    # The gate's evidence: candidate and incumbent scored on the same pairs, against one common base.
    base = frozen(spec.get("base", spec["reference"]))
    incumbent = frozen(spec.get("incumbent", spec["policy"]))
    results["paired"] = {
        "candidate": logps.margins(policy, base, beta=config.beta).tolist(),
        "incumbent": logps.margins(incumbent, base, beta=config.beta).tolist(),
        "length_diff": [len(chosen) - len(rejected) for (_, chosen), (_, rejected) in zip(*pairs)],
    }
    if estimate is None:
        estimate = samples_and_kl(config, policy, reference, tokenizer, heldout_prompts(rows, config.eval_prompts))
    results.update(estimate)
    return results


def _kl_budget(spec: dict[str, Any], config: RoundConfig, trainer, rows: list[dict[str, Any]]):
    """The KL-budget callback, added to the trainer, when the round has a budget, checks and held-out
    prompts (from `rows`), in a single process; else None."""
    if config.kl_budget is None or not config.kl_checks or trainer.args.world_size > 1:
        return None
    prompts = heldout_prompts(rows, config.eval_prompts)
    if not prompts:
        return None
    reference = trainer.ref_model
    if reference is None:  # LoRA against its own start: TRL switches the adapter off; we need the weights
        device = next(trainer.model.parameters()).device
        paths = spec["reference"]
        reference = load_model(paths["base_path"], paths["adapter_path"], merge=True, device=str(device)).eval()
    callback = _kl_budget_callback(config, reference=reference, tokenizer=trainer.processing_class, prompts=prompts)
    trainer.add_callback(callback)
    return callback


def run(spec: dict[str, Any]) -> None:
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    config = RoundConfig.from_dict(spec["config"])
    output_dir = Path(spec["output_dir"])
    model_dir = output_dir / "model"
    cache_dir = output_dir / "hf-cache"
    emit("started")
    train_dataset = datasets.load_dataset(
        "json", data_files=spec["train_path"], split="train", cache_dir=str(cache_dir)
    )
    train_dataset = confident_pairs(train_dataset, config)
    trainer = build_trainer(spec, config, train_dataset=train_dataset, callbacks=[_event_callback()])
    rows = confident_heldout(read_jsonl(spec["heldout_path"]) if spec.get("heldout_path") else [], config)
    budget = _kl_budget(spec, config, trainer, rows)
    started = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - started
    trainer.save_model(str(model_dir))
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return
    emit(
        "trained",
        train_seconds=train_seconds,
        samples_per_second=result.metrics.get("train_samples_per_second"),
        global_step=result.global_step,
        train_loss=result.training_loss,
        model_dir=str(model_dir),
        kl_checks=budget.checks if budget else [],
        kept_step=budget.kept_step if budget else result.global_step,
    )
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    emit("evaluating")
    estimate = budget.kept_estimate if budget else None
    emit("evaluated", results=evaluate(spec, config, model_dir=model_dir, rows=rows, estimate=estimate))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.dpo_worker SPEC.json  (or - to warm up, then read the spec's path on stdin)",
              file=sys.stderr)
        return 2
    spec_path = args[0]
    if spec_path == "-":
        # A warm worker: pay for importing torch, transformers and TRL (most of a
        # small round's fixed cost) before any round needs it, then wait for one.
        import datasets  # noqa: F401
        import peft  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
        from trl import DPOConfig, DPOTrainer  # noqa: F401  (trl imports its trainers lazily)

        emit("warm")
        spec_path = sys.stdin.readline().strip()
        if not spec_path:
            return 0  # let go unused (its parent shut down)
    run(json.loads(Path(spec_path).read_text(encoding="utf-8")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A DPO round on one NVIDIA GPU as a training host runs it: the training worker alone, with no Django,
database or vLLM on the host.

    python bench/gpu_round.py --train TRAIN.jsonl --heldout HELDOUT.jsonl [--model var/models/tiny]
        [--shape smollm2-135m] [--epochs 1] [--batch-size 16] [--max-length 256]
        [--min-posterior 0.6] [--posterior-smoothing] [--parity-pairs 16]

TRAIN and HELDOUT are a round's exported snapshots (training.export's JSONL: prompt, chosen, rejected,
posterior). The training task writes a spec and starts `python -m training.dpo_worker SPEC.json` through
training.runner; this writes the same spec (a LoRA round whose policy, reference, incumbent and base are
the model; the default KL budget and checks) and starts it the same way, with nvidia-smi sampling the GPU's
memory. bench/gpu_check.py checks the whole loop, vLLM's GPU engine too, where vLLM is installed; this
needs torch, transformers, TRL, PEFT and datasets only.

Then, on the GPU in float32, the per-pair loss (training.confidence_dpo): TRL's first-step loss of
ConfidenceDPOTrainer on the `--parity-pairs` training rows of least posterior (whether or not the round
kept them: those the smoothing moves most), the trained policy against the model, beside
conservative DPO's loss with eps = 1 - posterior computed by hand from training.evaluation's log-probs of
the same pairs.

`--shape smollm2-135m`: a Llama of SmolLM2-135M-Instruct's dimensions with random weights and the model's
tokenizer (so its vocabulary), built in a throwaway folder (no model hub here to take real weights from):
a real model's size for the throughput figures. Its held-out accuracy and KL mean nothing.

Stops at once, saying so, without an NVIDIA GPU. Prints one JSON line last: training_pairs, train_s,
training_pairs_per_s, parameters, tokens_per_pair, achieved_tflops, mfu, peak_gpu_memory_gib,
heldout_accuracy, kl, kl_checks, parity_max_eps, parity_loss_trl, parity_loss_formula, parity_abs_diff, wall_s.
`--kl-checks 0` times the training alone (the checks' sampling counts in train_s).

Measured on one NVIDIA H200 (torch 2.11 cu130, our pinned transformers, TRL, PEFT, datasets carried as wheels),
817 training pairs (the positive oracle's, from bench/label_efficiency.py's seed-0 exports; 117 tokens a pair)
and 200 held-out ones, LoRA r=8, max_length 256, bf16:
- every run ended with the worker's evaluation, and the per-pair loss matched conservative DPO by hand to
  4e-7 or better (16 pairs, eps up to 0.9997);
- tiny model, smoothing, batch 16: 27.0 s of training (52 steps), 1.0 GiB peak;
- SmolLM2-135M's shape, smoothing, batch 16: 35.2 s with the six KL checks, 13.3 s without (62.6 pairs/s,
  MFU 0.5%), 3.3 GiB; batch 64, two epochs: 31.6 s with the checks, 7.9 s without (215 pairs/s, 16 TFLOP/s,
  MFU 1.6%), 12.7 GiB. The KL checks (16 prompts sampled to 64 tokens, six times) were 62-75% of the
  training time; at this size and length the GPU mostly waits on kernel launches.
Since then the worker estimates the KL of the final weights first and of the kept points only when that is
over the budget (training.dpo_worker._kl_budget_callback): one estimate instead of six in a round within its
budget, as these were. Not yet measured on a GPU: no device was lent to the session that changed it.
"""

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_check  # noqa: E402

# SmolLM2-135M-Instruct's config.json, less its vocabulary and special tokens (the tokenizer's are kept).
SHAPES = {
    "smollm2-135m": {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192,
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "tie_word_embeddings": True,
    },
}


def fail(message: str) -> None:
    gpu_check.fail(message, bench="gpu_round")


def shaped_model(model: Path, shape: str, into: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(model)
    config.update(SHAPES[shape])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(into)
    AutoTokenizer.from_pretrained(model).save_pretrained(into)
    return into


def run_round(spec: dict, work: Path) -> dict:
    """The worker, started as the training task starts it; its "trained" and "evaluated" events."""
    from training import runner

    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    events: dict = {}
    log = work / "worker.log"
    try:
        runner.run_worker(
            command=runner.worker_command(launcher="", spec_path=spec_path),
            cwd=ROOT,
            log_path=log,
            on_event=lambda event: events.update({event["event"]: event}),
            on_output=lambda line: None,
            should_cancel=lambda: False,
        )
    except runner.WorkerFailed as failed:
        fail(f"{failed}; the end of {log}: {log.read_text(encoding='utf-8')[-2000:]}")
    return events


def per_pair_loss_parity(model: Path, adapter: Path, rows: list[dict], config, work: Path) -> dict:
    """TRL's first-step loss of ConfidenceDPOTrainer on `rows` against conservative DPO's by hand (float32)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback

    from training import dpo_worker, evaluation
    from training.confidence_dpo import ConfidenceDPOTrainer
    from training.config import RoundConfig

    class FirstLoss(TrainerCallback):
        loss = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and self.loss is None:
                self.loss = logs["loss"]

    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = dpo_worker.load_model(str(model), str(adapter), trainable=True, merge=True, device="cuda").float()
    reference = dpo_worker.load_model(str(model), device="cuda").float().eval()
    pairs = evaluation.tokenized_pairs(tokenizer, rows, max_length=config.max_length)
    logps = evaluation.PairLogps(pairs, pad_token_id=tokenizer.pad_token_id, batch_size=len(rows))
    margins = logps.margins(policy.eval(), reference, beta=config.beta).double().tolist()
    by_hand = [
        -(1 - eps) * math.log(1 / (1 + math.exp(-m))) - eps * math.log(1 / (1 + math.exp(m)))
        for m, eps in zip(margins, (1 - row["posterior"] for row in rows))
    ]
    first = FirstLoss()
    parity_config = RoundConfig.from_dict({**config.as_dict(), "precision": "fp32", "batch_size": len(rows)})
    trainer = ConfidenceDPOTrainer(
        model=policy.train(),
        ref_model=reference,
        args=dpo_worker.dpo_args(parity_config, work / "parity", max_steps=1),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[first],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    formula = sum(by_hand) / len(by_hand)
    return {
        "parity_pairs": len(rows),
        "parity_max_eps": round(1 - min(row["posterior"] for row in rows), 6),
        "parity_loss_trl": first.loss,
        "parity_loss_formula": round(formula, 6),
        "parity_abs_diff": abs(first.loss - formula),
    }


def main() -> None:
    from training.config import RoundConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=Path, required=True, help="A round's training snapshot (JSONL).")
    parser.add_argument("--heldout", type=Path, required=True, help="The round's held-out snapshot (JSONL).")
    parser.add_argument("--model", type=Path, default=ROOT / "var" / "models" / "tiny")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="Random weights of this shape, the model's tokenizer.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--min-posterior", type=float, default=0.6)
    parser.add_argument("--posterior-smoothing", action="store_true")
    parser.add_argument("--parity-pairs", type=int, default=16)
    parser.add_argument("--kl-checks", type=int, default=RoundConfig.kl_checks,
                        help="KL estimates while training (each samples the held-out prompts): 0 times training alone.")
    args = parser.parse_args()

    import torch

    if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
        fail("no NVIDIA GPU here (torch.cuda.is_available() is False or nvidia-smi is missing)")
    for path in (args.train, args.heldout, args.model):
        if not path.exists():
            fail(f"{path}: no such file or folder")
    from training.dpo_worker import confident, read_jsonl

    rows = [row for row in read_jsonl(args.train) if row.get("posterior") is not None]
    if not rows:
        fail(f"{args.train}: no row has a posterior (exported before reliability?): export the round again")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-round-"))
    model = shaped_model(args.model, args.shape, work / "shaped") if args.shape else args.model
    # kl_budget: settings.TRAINING_KL_BUDGET's default (the worker has no Django to read it from).
    config = RoundConfig(epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                         eval_prompts=16, min_posterior=args.min_posterior, posterior_smoothing=args.posterior_smoothing,
                         kl_budget=10.0, kl_checks=args.kl_checks, regenerate=False, ab_share=0.0)  # fmt: skip
    version = {"base_path": str(model), "adapter_path": ""}
    spec = {"train_path": str(args.train), "heldout_path": str(args.heldout), "output_dir": str(work / "round"),
            "policy": version, "reference": version, "incumbent": version, "base": version,
            "config": config.as_dict()}  # fmt: skip
    with gpu_check.MemoryWatch() as memory:
        events = run_round(spec, work)
    if "evaluated" not in events:
        fail(f"the worker ended without evaluating: see {work / 'worker.log'}")
    trained, results = events["trained"], events["evaluated"]["results"]
    kept = [row for row in rows if confident(row, args.min_posterior)]  # what the worker trained on
    gpu = torch.cuda.get_device_name(0)
    flops = gpu_check.training_flops(model, kept, max_length=args.max_length, pairs_per_s=trained["samples_per_second"], gpu=gpu)
    least_sure = sorted(rows, key=lambda row: row["posterior"])[: args.parity_pairs]
    parity = per_pair_loss_parity(model, Path(trained["model_dir"]), least_sure, config, work)
    print(json.dumps({
        "bench": "gpu_round",
        "gpu": gpu,
        "model": str(args.model),
        "shape": args.shape,
        "posterior_smoothing": args.posterior_smoothing,
        "training_pairs": len(kept),
        "train_s": round(trained["train_seconds"], 2),
        "training_pairs_per_s": round(trained["samples_per_second"], 2),
        "global_step": trained["global_step"],
        **flops,
        "peak_gpu_memory_gib": round(memory.peak_mib / 1024, 2),
        "heldout_pairs": results["pairs"],
        "heldout_accuracy": results["accuracy"],
        "kl": results.get("kl"),
        "kl_checks": len(trained["kl_checks"]),
        **parity,
        "wall_s": round(time.perf_counter() - started, 1),
    }))  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

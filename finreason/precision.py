"""Which precision a CPU run trains in, as ``00_check_env.py --probe`` measured it.

The probe runs the SFT phase in float32 and in bfloat16 autocast (``probe.probe``);
``choose_from_steps`` keeps bfloat16 only where its steps are faster *and* its projected peak
fits; the decision is recorded in ``check_env.json`` with the machine and the settings it was
measured with, and ``recorded_precision`` hands it to the trainers (``training.precision_decision``)
while both still hold.
"""

from __future__ import annotations

from typing import Any

from finreason import storage
from finreason.layout import Layout
from finreason.provenance import machine

# bf16 autocast must beat float32's measured step time by this factor to be chosen: a smaller
# difference is within the noise of a few steps and not worth the casts' memory
AUTO_BF16_MIN_SPEEDUP = 1.05
# the constants that shape what an SFT step costs: a recorded precision decision holds for a run
# only while these are the same as when the probe measured
PRECISION_SETTINGS = (
    "PROFILE", "MODEL_NAME", "FINETUNE", "LOAD_IN_4BIT", "MAX_SEQ_LEN", "SFT_BATCH_SIZE", "GRADIENT_CHECKPOINTING",
    "SFT_PAD_TO_MULTIPLE", "EVIDENCE_MODE", "RETRIEVER", "RETRIEVER_TOP_K", "PROMPT_TOKEN_BUDGET",
    "PROMPT_INSTRUCTIONS", "FEW_SHOT_EXAMPLE", "SFT_TARGET", "SFT_TRAIN_LIMIT", "CPU_MEMORY_BUDGET_GB",
)


def choose_from_steps(measured: dict[str, dict[str, Any]], budget_gb: float) -> tuple[str, str]:
    """(precision, why) from the SFT phase measured in each precision: bfloat16 only where its
    steps are at least AUTO_BF16_MIN_SPEEDUP faster than float32's and its projected peak fits
    ``budget_gb``; float32 otherwise."""
    fp32, bf16 = measured["float32"], measured["bfloat16"]
    if bf16.get("out_of_memory") or not bf16.get("step_s"):
        return "float32", "bfloat16 did not finish its steps"
    if not fp32.get("step_s"):
        return "bfloat16", "float32 did not finish its steps"
    speedup = fp32["step_s"] / bf16["step_s"]
    peak = bf16["projected_peak_memory_gb"]
    if speedup < AUTO_BF16_MIN_SPEEDUP:
        return "float32", f"bfloat16 is not faster ({bf16['step_s']:.2f} s/step against {fp32['step_s']:.2f}: {speedup:.2f}x)"
    if peak > budget_gb:
        return "float32", (f"bfloat16 is {speedup:.2f}x faster but its projected SFT peak {peak:.2f} GiB exceeds "
                           f"CPU_MEMORY_BUDGET_GB={budget_gb:g}")
    return "bfloat16", f"{speedup:.2f}x faster per step and its projected SFT peak {peak:.2f} GiB fits CPU_MEMORY_BUDGET_GB={budget_gb:g}"


def machine_identity() -> dict[str, Any]:
    """What makes a precision decision hold on a machine: the CPU, its count and features, torch."""
    import torch  # heavy: read only when a decision is checked

    found = machine()
    return {"cpu_model": found["cpu_model"], "cpus": found["cpus"], "cpu_features": found["cpu_features"],
            "torch": torch.__version__}


def recorded_precision(cfg: Any) -> tuple[str | None, str]:
    """(the precision ``00_check_env.py --probe`` chose for ``cfg`` on this machine, or None; why).
    The decision in OUTPUT_DIR's check_env.json holds only for the same machine and the same
    PRECISION_SETTINGS."""
    path = Layout.of(cfg).check_env
    record = (storage.read_json_object(path) or {}).get("probe", {}) if path.is_file() else {}
    decision = record.get("cpu_precision") if isinstance(record, dict) else None
    if not isinstance(decision, dict) or decision.get("chosen") not in ("float32", "bfloat16"):
        return None, f"no precision decision in {path}"
    if decision.get("machine") != machine_identity():
        return None, f"the decision in {path} was made on another machine or torch"
    settings = decision.get("settings") or {}
    changed = [key for key in PRECISION_SETTINGS if settings.get(key) != getattr(cfg, key)]
    if changed:
        return None, f"the decision in {path} was measured with other {', '.join(changed)}"
    return decision["chosen"], f"measured by 00_check_env.py --probe: {decision['reason']}"

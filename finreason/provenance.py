"""What produced a results file: the ``provenance`` object every results file carries.

Config snapshot, seed, profile, evidence mode, the retriever (and the fitted ranker's key when this
process used one), command, package versions and machine, plus what
the caller adds (``data=bundle.describe()``, ``model=...``, ``weights=...``, ``weights_sha256=...``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from finreason import retrieval

TRACKED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate",
    "rank-bm25", "lightgbm", "unsloth", "vllm",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# the CPU features that decide how fast bf16 runs: native bf16 dot products (AVX512-BF16, AMX)
# or emulation through float32
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict[str, Any]:
    """Platform, CPU model and count, and which of CPU_FEATURES the CPU has (Linux only)."""
    found: dict[str, Any] = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                             "cpu_model": platform.processor() or platform.machine(), "cpu_features": None}
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    found["cpu_model"] = fields.get("model name", found["cpu_model"])
    flags = set(fields.get("flags", "").split())
    found["cpu_features"] = [name for name in CPU_FEATURES if name in flags]
    return found


def provenance(cfg: Any = None, **extra: Any) -> dict[str, Any]:
    """The ``provenance`` object: ``cfg`` is a ``configuration.Config`` (or None)."""
    snapshot = cfg.snapshot() if cfg is not None else {}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seed": snapshot.get("SEED"),
        "profile": snapshot.get("PROFILE"),
        "evidence_mode": snapshot.get("EVIDENCE_MODE"),
        "retriever": retrieval.describe(cfg) if cfg is not None and "RETRIEVER" in snapshot else None,
        "config": snapshot,
        "packages": package_versions(),
        "machine": machine(),
        **extra,
    }

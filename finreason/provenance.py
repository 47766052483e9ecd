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


def provenance(cfg: Any = None, **extra: Any) -> dict[str, Any]:
    """The ``provenance`` object: ``cfg`` is a ``configuration.Config`` (or None)."""
    from finreason import retrieval

    snapshot = cfg.snapshot() if cfg is not None else {}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seed": snapshot.get("SEED"),
        "profile": snapshot.get("PROFILE"),
        "evidence_mode": snapshot.get("EVIDENCE_MODE"),
        "retriever": retrieval.describe(cfg, fit=False) if cfg is not None and "RETRIEVER" in snapshot else None,
        "config": snapshot,
        "packages": package_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
        **extra,
    }

"""Load a top-level pipeline script (``04_train_sft.py``) as a module, for tests and benchmarks.

The numbered file names are fixed by the product layout and are not valid module names, so
``import`` cannot reach them; this is the one place that loads them by path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def load_script(filename: str) -> ModuleType:
    path = PROJECT_ROOT / filename
    if not path.is_file():
        raise FileNotFoundError(f"no script {filename} in {PROJECT_ROOT}")
    module_name = "finreason_script_" + path.stem.lstrip("0123456789_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

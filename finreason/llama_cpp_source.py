"""llama.cpp for the export (08_export.py): its GGUF converter, fetched once from the source
distribution of the pinned llama-cpp-python release on PyPI and cached, and that release's
compiled runtime, which the verification loads the GGUFs with.

The converter is llama.cpp's own ``convert_hf_to_gguf.py`` with its model classes and its own
``gguf-py``, taken from the sdist's ``vendor/llama.cpp/`` (``converter_dir``); it runs as a
subprocess, and F16 and Q8_0 are its own output types, so no compiled quantizer is needed. The
runtime is the same release, which pip compiles from that sdist (``INSTALL_HINT``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from finreason import storage
from finreason.errors import FinReasonError

_LOG = logging.getLogger(__name__)

# The llama-cpp-python release whose sdist carries the converter (and whose runtime verifies);
# requirements-export.txt pins the same version.
LLAMA_CPP_PYTHON = "0.3.36"
CONVERTER_CACHE = "~/.cache/finreason/llama.cpp"
CONVERTER_MARKER = ".finreason_converter.json"
# what the converter needs from the sdist: the script, its model classes, its own gguf package
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
INSTALL_HINT = f"pip install -r requirements-export.txt (llama-cpp-python=={LLAMA_CPP_PYTHON}; compiles llama.cpp: about 5 min on 2 cores)"


class ConverterError(FinReasonError):
    """llama.cpp's converter cannot be had; the message says what to do."""


# --- the converter -----------------------------------------------------------------------------


def converter_dir(cache: str | os.PathLike = CONVERTER_CACHE, version: str = LLAMA_CPP_PYTHON) -> Path:
    """llama.cpp's converter (script, model classes, gguf-py) from the llama-cpp-python sdist:
    cached in ``cache``/<version>/, downloaded with pip (PyPI) the first time."""
    target = Path(cache).expanduser() / version
    if (target / CONVERTER_MARKER).is_file() and (target / "convert_hf_to_gguf.py").is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="finreason-sdist-") as download:
        _LOG.info("downloading llama-cpp-python==%s's source (~77 MB, once) for llama.cpp's GGUF converter", version)
        command = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
                   "--no-binary", ":all:", "--quiet", "--disable-pip-version-check", "-d", download]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(Path(download).glob("llama_cpp_python-*.tar.gz"))
        if result.returncode != 0 or not archives:
            reason = (result.stderr.strip().splitlines() or ["no archive"])[-1]
            raise ConverterError(
                f"llama.cpp's converter is not cached in {target} and `pip download llama-cpp-python=={version} "
                f"--no-binary :all:` failed ({reason}): run it where PyPI is reachable (make setup-export does)")
        extract_converter(archives[0], target)
    return target


def extract_converter(archive: Path, target: Path) -> Path:
    """Unpack only the converter's files from the sdist ``archive`` into ``target``, atomically.
    Members are plain files and folders under vendor/llama.cpp/ (tarfile's "data" filter refuses
    links, absolute paths and ``..``)."""
    with tarfile.open(archive, "r:gz") as tar, storage.atomic_folder(target) as staging:
        roots = {name.split("/", 1)[0] for name in tar.getnames()}
        if len(roots) != 1:
            raise ConverterError(f"{archive} is not a llama-cpp-python source archive")
        prefix = f"{roots.pop()}/vendor/llama.cpp/"
        members = []
        for member in tar.getmembers():
            inner = member.name[len(prefix):] if member.name.startswith(prefix) else None
            if inner and (member.isfile() or member.isdir()) and any(
                    inner == part or inner.startswith(part) for part in CONVERTER_PARTS):
                member.name = inner
                members.append(member)
        if not any(member.name == "convert_hf_to_gguf.py" for member in members):
            raise ConverterError(f"{archive} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        tar.extractall(staging, members=members, filter="data")
        marker = {"archive": archive.name, "sha256": storage.file_sha256(archive)}
        (staging / CONVERTER_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    return target


def converter_record(converter: Path) -> dict[str, Any]:
    """Where the converter in ``converter`` came from, for export.json: the release and the sdist's hash."""
    return {"source": f"llama-cpp-python=={LLAMA_CPP_PYTHON} sdist (PyPI), vendor/llama.cpp/convert_hf_to_gguf.py",
            **storage.read_json_object(converter / CONVERTER_MARKER)}


# --- the runtime -------------------------------------------------------------------------------


def llama_cpp_available() -> bool:
    """llama-cpp-python imports and its compiled library loads."""
    try:
        importlib.import_module("llama_cpp")
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def llama_cpp_build() -> dict[str, Any]:
    """llama-cpp-python's version and how it was installed: a wheel tagged ``linux_*`` (not
    manylinux) was compiled on this machine from the sdist."""
    try:
        distribution = importlib.metadata.distribution("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return {"version": None}
    wheel = distribution.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    return {"version": distribution.version, "wheel_tags": tags,
            "compiled_here": any("-linux_" in tag for tag in tags)}

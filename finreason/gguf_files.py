"""Checking a .gguf file before anything loads it: a damaged or truncated file is one clear line.

A GGUF file is a header (magic ``GGUF``, version, metadata key/values, tensor descriptions) and
then the tensor data. ``check_gguf`` parses the header with the ``gguf`` package's reader and
checks that every tensor's bytes lie inside the file, so a download or copy cut short is refused
here, by name, instead of surfacing as a numpy or llama.cpp error deep inside a loader. It reads
nothing but the header and the file size (the reader memory-maps the file), so it takes
milliseconds even for gigabytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from finreason.errors import FinReasonError

MAGIC = b"GGUF"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
ARCHITECTURE_KEY = "general.architecture"


class GGUFFileError(FinReasonError, ValueError):
    """A .gguf file is missing, damaged or truncated; the message names it and what is wrong."""


def _field_text(reader: Any, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def check_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """Header facts of a sound GGUF file (architecture, tensor count and types, chat template);
    raise GGUFFileError naming the file and the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise GGUFFileError(f"{path}: no such .gguf file")
    size = path.stat().st_size
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != MAGIC:
        raise GGUFFileError(f"{path} is not a GGUF file (it starts with {magic!r}, not {MAGIC!r}): damaged or another format")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    # A cut or corrupted header fails inside the reader in many ways (struct sizes, numpy views
    # past the end of the map, bad UTF-8, unknown type codes); each of them means "damaged file".
    except Exception as error:  # noqa: BLE001
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GGUFFileError(f"{path} is damaged or truncated ({size} bytes; the GGUF header does not parse: {reason})") from None
    end = 0
    for tensor in reader.tensors:
        end = max(end, int(tensor.data_offset) + int(tensor.n_bytes))
        if int(tensor.data.nbytes) != int(tensor.n_bytes):
            raise GGUFFileError(f"{path} is truncated: tensor {tensor.name} needs {tensor.n_bytes} bytes, the file holds {tensor.data.nbytes}")
    if end > size:
        raise GGUFFileError(f"{path} is truncated: its tensors end at byte {end}, the file has {size}")
    if not reader.tensors:
        raise GGUFFileError(f"{path} holds no tensors (a vocabulary-only GGUF is not a model)")
    return {
        "architecture": _field_text(reader, ARCHITECTURE_KEY),
        "tensors": len(reader.tensors),
        "tensor_types": sorted({tensor.tensor_type.name for tensor in reader.tensors}),
        "chat_template": _field_text(reader, CHAT_TEMPLATE_KEY),
        "bytes": size,
    }

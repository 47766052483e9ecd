"""FinQA: find the data, verify it, validate every example, and say loudly what was used.

Sources, in this order (the first that applies wins):
1. ``DATA_DIR`` when given: a folder with train.json / dev.json / test.json in FinQA's format
   (plain or .gz); verified against a ``MANIFEST.json`` beside them when one exists.
2. The full official files in ``FINQA_CACHE_DIR``, verified by their git blob SHA-1s.
3. A download of the official files (when ``DOWNLOAD_DATA`` and a network exist), verified by
   SHA-1, then stored in the cache atomically.
4. The verified subset vendored in ``data/finqa/`` (1,294 examples; see its README).

A file whose checksum does not match is refused with ``DataError``, never used. Malformed
examples are skipped, counted, and their ids reported.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_LOG = logging.getLogger(__name__)

from finreason.errors import FinReasonError
from finreason.programs import ProgramError, execute
from finreason import storage
from finreason.storage import atomic_write_bytes

SPLITS = ("train", "dev", "test")
MAX_SPLIT_MB = 1024  # a split file, packed or unpacked: far above FinQA's own
MAX_MANIFEST_MB = 1
VENDORED_DIR = Path(__file__).resolve().parent.parent / "data" / "finqa"
OFFICIAL_COMMIT = "0f16e2867befa6840783e58be38c9efb9229d742"
OFFICIAL_URL = "https://raw.githubusercontent.com/czyssrs/FinQA/{commit}/dataset/{split}.json"
OFFICIAL_BLOB_SHA1 = {
    "train": "a6c2c5a60f9abe3fba5a793cc4d9e1dee2e09209",
    "dev": "970f239f591c782b17df420c0d343b780737f3da",
    "test": "59958c7c3bb3b21f4dff6bc912a0fe0ae710aee0",
}
OFFICIAL_SIZES = {"train": 6251, "dev": 883, "test": 1147}


class DataError(FinReasonError, RuntimeError):
    """The data cannot be used as it is; the message says what to do."""


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Example:
    """One FinQA question with its evidence and gold program."""

    id: str
    question: str
    table: list[list[str]]
    pre_text: list[str]
    post_text: list[str]
    program: str
    exe_ans: float | str
    answer: str
    gold_inds: dict[str, str]
    filename: str = ""

    @property
    def text(self) -> list[str]:
        """Report sentences, indexed as FinQA's ``text_N`` evidence ids."""
        return self.pre_text + self.post_text

    @property
    def evidence_source(self) -> str:
        """Where the gold facts are: "table", "text", "both" or "none"."""
        kinds = {key.split("_")[0] for key in self.gold_inds}
        if kinds == {"table", "text"}:
            return "both"
        if kinds in ({"table"}, {"text"}):
            return kinds.pop()
        return "none"

    @property
    def operations(self) -> list[str]:
        return [step.split("(")[0].strip() for step in self.program.split("), ") if step.strip()]

    @property
    def num_steps(self) -> int:
        return len(self.operations)


@dataclass
class FinQA:
    """The splits that were loaded, where from, and what was skipped."""

    source: str  # data_dir | cache | download | vendored
    location: str
    splits: dict[str, list[Example]]
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    full_release: bool = False

    def __getitem__(self, split: str) -> list[Example]:
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(self.splits)}")
        return self.splits[split]

    def by_id(self, split: str) -> dict[str, Example]:
        return {example.id: example for example in self[split]}

    def describe(self) -> dict[str, Any]:
        """What every results file records about the data it ran on."""
        return {
            "source": self.source,
            "location": self.location,
            "full_release": self.full_release,
            "counts": {split: len(examples) for split, examples in self.splits.items()},
            "skipped": {split: len(ids) for split, ids in self.skipped.items() if ids},
        }

    def banner(self) -> str:
        counts = ", ".join(f"{split} {len(examples):,}" for split, examples in self.splits.items())
        kind = "the full official FinQA release" if self.full_release else "a SUBSET of FinQA (not comparable to published test scores)"
        lines = [f"FinQA from {self.source}: {self.location}", f"{kind}: {counts}"]
        for split, ids in self.skipped.items():
            if ids:
                shown = ", ".join(f"{example_id} ({reason})" for example_id, reason in ids[:5])
                more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
                lines.append(f"skipped {len(ids)} malformed {split} examples: {shown}{more}")
        return "\n".join(lines)


def parse_example(raw: Any) -> Example:
    """Validate one official-format record; raise ``ValueError`` with the reason if malformed."""
    if not isinstance(raw, Mapping):
        raise ValueError("not an object")
    qa = raw.get("qa")
    if not isinstance(qa, Mapping):
        raise ValueError("no qa object")
    question = qa.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing question")
    table = raw.get("table")
    if not isinstance(table, list) or not all(isinstance(row, list) and row and all(isinstance(c, str) for c in row) for row in table):
        raise ValueError("table is not a list of rows of strings")
    pre_text, post_text = raw.get("pre_text", []), raw.get("post_text", [])
    if not all(isinstance(part, list) and all(isinstance(s, str) for s in part) for part in (pre_text, post_text)):
        raise ValueError("pre_text/post_text are not lists of strings")
    program = qa.get("program")
    if not isinstance(program, str) or not program.strip():
        raise ValueError("missing program")
    exe_ans = qa.get("exe_ans")
    if isinstance(exe_ans, bool) or not isinstance(exe_ans, (int, float, str)):
        raise ValueError("missing exe_ans")
    try:
        execute(program, table)
    except ProgramError as error:
        raise ValueError(f"gold program does not execute: {error}") from None
    gold_inds = qa.get("gold_inds") or {}
    if not isinstance(gold_inds, Mapping):
        raise ValueError("gold_inds is not an object")
    example_id = raw.get("id")
    if not isinstance(example_id, str) or not example_id:
        raise ValueError("missing id")
    return Example(
        id=example_id,
        question=question.strip(),
        table=[list(row) for row in table],
        pre_text=list(pre_text),
        post_text=list(post_text),
        program=program.strip(),
        exe_ans=float(exe_ans) if isinstance(exe_ans, int) else exe_ans,
        answer=str(qa.get("answer", "")),
        gold_inds=dict(gold_inds),
        filename=str(raw.get("filename", "")),
    )


def parse_split(records: Any, split: str) -> tuple[list[Example], list[tuple[str, str]]]:
    if not isinstance(records, list):
        raise DataError(f"{split}: expected a JSON list of examples, got {type(records).__name__}")
    examples, skipped, seen = [], [], set()
    for position, raw in enumerate(records):
        example_id = raw.get("id") if isinstance(raw, Mapping) and isinstance(raw.get("id"), str) else f"#{position}"
        try:
            example = parse_example(raw)
        except ValueError as error:
            skipped.append((example_id, str(error)))
            continue
        if example.id in seen:
            skipped.append((example.id, "duplicate id"))
            continue
        seen.add(example.id)
        examples.append(example)
    return examples, skipped


def _split_file(folder: Path, split: str) -> Path | None:
    for name in (f"{split}.json", f"{split}.json.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_bytes(path: Path, max_mb: int = MAX_SPLIT_MB) -> bytes:
    """A data file's bytes (unpacked when .gz) through storage's bounded reader: at most
    ``max_mb``, packed or unpacked, so neither a device nor a gzip bomb is read without end."""
    try:
        raw = storage.read_bounded(path, max_mb * 2**20, setting="data.MAX_SPLIT_MB")
    except storage.StorageError as error:
        raise DataError(str(error)) from None
    if path.suffix != ".gz":
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
            unpacked = handle.read(max_mb * 2**20 + 1)
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: not a valid gzip file ({error})") from None
    if len(unpacked) > max_mb * 2**20:
        raise DataError(f"{path} unpacks to more than {max_mb} MB, the limit (data.MAX_SPLIT_MB): not a FinQA split")
    return unpacked


def _decode(data: bytes, path: Path | str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        # FinQA nests four levels deep; thousands mean a damaged or hostile file, not a traceback.
        raise DataError(f"{path}: JSON nested too deeply to read; the file is damaged, replace it") from None


def _verify_manifest(folder: Path, split: str, data: bytes) -> None:
    manifest_path = folder / "MANIFEST.json"
    if not manifest_path.is_file():
        return
    manifest = _decode(_read_bytes(manifest_path, MAX_MANIFEST_MB), manifest_path)
    if not isinstance(manifest, Mapping):
        raise DataError(f"{manifest_path}: expected an object of file entries")
    entry = manifest.get(f"{split}.json")
    if entry is None:
        return
    if not isinstance(entry, Mapping):
        raise DataError(f"{manifest_path}: the entry for {split}.json is not an object")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        raise DataError(
            f"{folder}/{split}.json does not match its MANIFEST.json (sha256 {digest[:12]}… "
            f"expected {str(entry.get('sha256'))[:12]}…): the file is damaged or was edited; restore it"
        )


def _load_folder(folder: Path, source: str, splits: tuple[str, ...], verify_official: bool) -> FinQA:
    loaded, skipped = {}, {}
    for split in splits:
        path = _split_file(folder, split)
        if path is None:
            raise DataError(f"{folder} has no {split}.json (or {split}.json.gz)")
        data = _read_bytes(path)
        if verify_official:
            digest = git_blob_sha1(data)
            if digest != OFFICIAL_BLOB_SHA1[split]:
                raise DataError(
                    f"{path} is not the official FinQA {split}.json (git blob SHA-1 {digest}, expected "
                    f"{OFFICIAL_BLOB_SHA1[split]}). Delete it to re-download, or pass --DATA_DIR=folder to use it anyway."
                )
        else:
            _verify_manifest(folder, split, data)
        loaded[split], skipped[split] = parse_split(_decode(data, path), split)
    counts = {split: len(examples) + len(skipped[split]) for split, examples in loaded.items()}
    full = verify_official or all(counts.get(split) == size for split, size in OFFICIAL_SIZES.items() if split in counts)
    return FinQA(source=source, location=str(folder), splits=loaded, skipped=skipped, full_release=full)


def download_official(cache_dir: Path, timeout_s: float, splits: tuple[str, ...] = SPLITS) -> bool:
    """Fetch the official files into ``cache_dir``; False (and nothing written) when offline."""
    fetched = {}
    for split in splits:
        url = OFFICIAL_URL.format(commit=OFFICIAL_COMMIT, split=split)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (fixed https URL)
                data = response.read()
        except (urllib.error.URLError, TimeoutError, OSError):
            return False
        digest = git_blob_sha1(data)
        if digest != OFFICIAL_BLOB_SHA1[split]:
            raise DataError(f"downloaded {url} has SHA-1 {digest}, expected {OFFICIAL_BLOB_SHA1[split]}; not using it")
        fetched[split] = data
    for split, data in fetched.items():
        atomic_write_bytes(cache_dir / f"{split}.json", data)  # bytes as fetched: the SHA-1 must hold on reload
    return True


def load_finqa(
    data_dir: str = "",
    cache_dir: str = "~/.cache/finreason/finqa",
    download: bool = True,
    timeout_s: float = 20.0,
    splits: tuple[str, ...] = SPLITS,
    verbose: bool = True,
) -> FinQA:
    """Load FinQA from the first available source (see module docstring) and print which."""
    cache = Path(cache_dir).expanduser()
    if data_dir:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"--DATA_DIR={data_dir}: no such folder")
        bundle = _load_folder(folder, "data_dir", splits, verify_official=False)
    elif all(_split_file(cache, split) for split in splits):
        bundle = _load_folder(cache, "cache", splits, verify_official=True)
    elif download and download_official(cache, timeout_s, splits):
        bundle = _load_folder(cache, "download", splits, verify_official=True)
    else:
        bundle = _load_folder(VENDORED_DIR, "vendored", splits, verify_official=False)
    if verbose:
        for line in bundle.banner().splitlines():
            _LOG.info(line)
    return bundle


def load_from_config(cfg: Any, splits: tuple[str, ...] = SPLITS, verbose: bool = True) -> FinQA:
    return load_finqa(
        data_dir=cfg.DATA_DIR,
        cache_dir=cfg.FINQA_CACHE_DIR,
        download=cfg.DOWNLOAD_DATA,
        timeout_s=cfg.DOWNLOAD_TIMEOUT_S,
        splits=splits,
        verbose=verbose,
    )


def first(items: Sequence[T], limit: int) -> list[T]:
    """The first ``limit`` items in file order (0 = all): every fixed, reproducible slice
    (evaluation, SFT and GRPO training limits, the difficulty filter's candidates)."""
    return list(items[:limit] if limit > 0 else items)

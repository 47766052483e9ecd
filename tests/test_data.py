"""FinQA loading: which source wins, checksums refused, malformed examples skipped and reported."""

import copy
import gzip
import hashlib
import json
import re

import pytest

from finreason import data
from finreason.data import DataError, load_finqa


@pytest.fixture(scope="module")
def raw_dev():
    with gzip.open(data.VENDORED_DIR / "dev.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


def write_split(folder, split, records):
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(records)
    (folder / f"{split}.json").write_text(text, encoding="utf-8")
    return text.encode("utf-8")


def test_vendored_subset_counts(tmp_path):
    bundle = load_finqa(cache_dir=str(tmp_path / "empty_cache"), download=False, verbose=False)
    assert bundle.source == "vendored" and not bundle.full_release
    assert {split: len(bundle[split]) for split in data.SPLITS} == {"train": 419, "dev": 425, "test": 450}
    assert bundle.describe()["counts"] == {"train": 419, "dev": 425, "test": 450}
    assert "SUBSET" in bundle.banner()


def test_banner_goes_to_stderr(tmp_path, capsys):
    from finreason.console import setup_logging

    setup_logging()
    load_finqa(cache_dir=str(tmp_path / "empty_cache"), download=False, splits=("dev",))
    assert "[data] FinQA from vendored" in capsys.readouterr().err


def test_data_dir_wins(tmp_path, raw_dev):
    folder = tmp_path / "mine"
    for split in data.SPLITS:
        write_split(folder, split, raw_dev[:3])
    bundle = load_finqa(data_dir=str(folder), cache_dir=str(tmp_path / "empty_cache"), download=False, verbose=False)
    assert bundle.source == "data_dir" and bundle.location == str(folder)
    assert {split: len(bundle[split]) for split in data.SPLITS} == {"train": 3, "dev": 3, "test": 3}
    assert not bundle.full_release


@pytest.mark.parametrize(
    "problem",
    [
        "missing_folder",  # --DATA_DIR pointing nowhere
        "missing_split",  # a folder without test.json
        "not_json",  # a file that is not JSON
        "not_a_list",  # JSON, but not a list of examples
    ],
)
def test_data_dir_errors(tmp_path, raw_dev, problem):
    folder = tmp_path / "mine"
    if problem != "missing_folder":
        write_split(folder, "dev", raw_dev[:2])
        write_split(folder, "train", raw_dev[:2])
    if problem == "not_json":
        (folder / "test.json").write_text("{oops", encoding="utf-8")
    if problem == "not_a_list":
        (folder / "test.json").write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(DataError):
        load_finqa(data_dir=str(folder), cache_dir=str(tmp_path / "empty_cache"), download=False, verbose=False)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("test.json", "{oops", "test.json: not valid JSON"),  # a syntax error
        ("test.json", "[" * 100_000 + "]" * 100_000, "test.json: JSON nested too deeply"),  # deeper than the parser's recursion: no RecursionError
        ("test.json", '[{"id": ' + "[" * 100_000 + "]" * 100_000 + "}]", "test.json: JSON nested too deeply"),  # one deep field in one example
        ("MANIFEST.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "MANIFEST.json: JSON nested too deeply"),  # the manifest is decoded the same way
        ("test.json", b"\xff\xfe[]", "test.json: not valid JSON"),  # not UTF-8
    ],
)
def test_unreadable_json_is_a_data_error(tmp_path, raw_dev, name, content, message):
    folder = tmp_path / "mine"
    for split in data.SPLITS:
        write_split(folder, split, raw_dev[:2])
    target = folder / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        load_finqa(data_dir=str(folder), cache_dir=str(tmp_path / "empty_cache"), download=False, verbose=False)


def test_cache_with_wrong_checksum_is_refused(tmp_path, raw_dev):
    cache = tmp_path / "cache"
    for split in data.SPLITS:
        write_split(cache, split, raw_dev[:2])
    with pytest.raises(DataError, match=r"train\.json is not the official FinQA train\.json"):
        load_finqa(cache_dir=str(cache), download=False, verbose=False)


def test_partial_cache_falls_through_to_vendored(tmp_path, raw_dev):
    # Only some official files present: the cache is not used (and nothing is downloaded).
    cache = tmp_path / "cache"
    write_split(cache, "dev", raw_dev[:2])
    bundle = load_finqa(cache_dir=str(cache), download=False, splits=("dev", "test"), verbose=False)
    assert bundle.source == "vendored"


def _break(record, how):
    record = copy.deepcopy(record)
    if how == "missing question":
        del record["qa"]["question"]
    elif how == "table not rows":
        record["table"] = "a | b"
    elif how == "bad program":
        record["qa"]["program"] = "modulo(1, 2)"
    elif how == "no qa":
        del record["qa"]
    elif how == "no id":
        del record["id"]
    return record


@pytest.mark.parametrize(
    "how, reason",
    [
        ("missing question", "missing question"),  # the question is what is asked
        ("table not rows", "table is not a list of rows"),  # table ops need rows of cells
        ("bad program", "gold program does not execute"),  # a gold program must run
        ("no qa", "no qa object"),  # nothing to ask or answer
        ("no id", "missing id"),  # results are keyed by id
    ],
)
def test_malformed_examples_are_skipped_and_reported(tmp_path, raw_dev, how, reason):
    folder = tmp_path / "mine"
    broken = _break(raw_dev[0], how)
    write_split(folder, "dev", [broken] + raw_dev[1:4])
    bundle = load_finqa(data_dir=str(folder), download=False, splits=("dev",), verbose=False)
    assert len(bundle["dev"]) == 3
    skipped_id, skipped_reason = bundle.skipped["dev"][0]
    assert skipped_id == (raw_dev[0]["id"] if how != "no id" else "#0")
    assert reason in skipped_reason
    assert bundle.describe()["skipped"] == {"dev": 1}
    assert "skipped 1 malformed dev examples" in bundle.banner()


def test_duplicate_ids_are_skipped(tmp_path, raw_dev):
    folder = tmp_path / "mine"
    write_split(folder, "dev", [raw_dev[0], raw_dev[0], raw_dev[1]])
    bundle = load_finqa(data_dir=str(folder), download=False, splits=("dev",), verbose=False)
    assert len(bundle["dev"]) == 2 and bundle.skipped["dev"] == [(raw_dev[0]["id"], "duplicate id")]


@pytest.mark.parametrize(
    "manifest_sha, ok",
    [
        ("right", True),  # the manifest matches: loaded
        ("0" * 64, False),  # the file was edited after the manifest was written: refused
    ],
)
def test_manifest_sha256(tmp_path, raw_dev, manifest_sha, ok):
    folder = tmp_path / "mine"
    payload = write_split(folder, "dev", raw_dev[:2])
    digest = hashlib.sha256(payload).hexdigest() if manifest_sha == "right" else manifest_sha
    (folder / "MANIFEST.json").write_text(json.dumps({"dev.json": {"sha256": digest}}), encoding="utf-8")
    if ok:
        assert len(load_finqa(data_dir=str(folder), download=False, splits=("dev",), verbose=False)["dev"]) == 2
    else:
        with pytest.raises(DataError, match="does not match its MANIFEST.json"):
            load_finqa(data_dir=str(folder), download=False, splits=("dev",), verbose=False)


def test_vendored_manifest_matches():
    manifest = json.loads((data.VENDORED_DIR / "MANIFEST.json").read_text())
    for split in data.SPLITS:
        payload = gzip.decompress((data.VENDORED_DIR / f"{split}.json.gz").read_bytes())
        assert hashlib.sha256(payload).hexdigest() == manifest[f"{split}.json"]["sha256"]


def test_example_properties(tmp_path):
    bundle = load_finqa(cache_dir=str(tmp_path / "empty_cache"), download=False, splits=("dev",), verbose=False)
    example = bundle.by_id("dev")["AON/2014/page_47.pdf-1"]
    assert example.operations == ["table_average", "table_max", "subtract"] and example.num_steps == 3
    assert example.evidence_source in ("table", "text", "both")
    assert example.text == example.pre_text + example.post_text
    with pytest.raises(DataError, match="unknown split"):
        bundle["train"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("dev.json.gz", gzip.compress(b" " * (2 * 2**20)), "unpacks to more than 1 MB"),  # a gzip bomb stops at the cap
        ("dev.json", b" " * (2**20 + 1), "larger than 1 MB"),  # a plain file too
        ("dev.json.gz", b"not gzip", "not a valid gzip file"),  # damage, one line
    ],
)
def test_data_files_are_read_bounded(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        data._read_bytes(path, max_mb=1)

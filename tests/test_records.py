"""Results files survive kills: atomic JSON, torn JSONL lines, provenance completeness."""

import json

import pytest

from finreason import records


def test_atomic_write_json_leaves_no_temp_files(tmp_path):
    target = tmp_path / "nested" / "summary.json"
    records.atomic_write_json(target, {"a": 1})
    records.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


@pytest.mark.parametrize(
    "content, expected_ids",
    [
        ('{"id": "a"}\n{"id": "b"}\n', ["a", "b"]),  # clean file: every record
        ('{"id": "a"}\n{"id": "b', ["a"]),  # killed mid-write: torn last line dropped
        ('{"id": "a"}\n\n{"id": "b"}\n', ["a", "b"]),  # blank line tolerated
        ('{"id": "a"}\nnot json\n{"id": "c"}\n', ["a", "c"]),  # corrupt line skipped, not fatal
        ('[1, 2]\n{"id": "a"}\n', ["a"]),  # a non-object line is not a record
        ("", []),  # empty file: nothing done yet
    ],
)
def test_read_jsonl_tolerates_damage(tmp_path, content, expected_ids):
    path = tmp_path / "run.jsonl"
    path.write_text(content)
    assert [r["id"] for r in records.read_jsonl(path)] == expected_ids


def test_repair_then_append_starts_on_a_clean_line(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b')
    assert records.repair_jsonl(path) == 1
    records.append_jsonl(path, [{"id": "c"}])
    assert [r["id"] for r in records.read_jsonl(path)] == ["a", "c"]


def test_read_jsonl_of_missing_file_is_empty(tmp_path):
    assert list(records.read_jsonl(tmp_path / "absent.jsonl")) == []


def test_provenance_records_config_seed_and_packages():
    snapshot = {"SEED": 7, "PROFILE": "cpu", "MODEL_NAME": "m"}
    record = records.provenance(snapshot, model="m", adapter=None)
    assert record["seed"] == 7
    assert record["profile"] == "cpu"
    assert record["config"] == snapshot
    assert record["model"] == "m"
    for package in ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets"):
        assert package in record["packages"]

"""Score a predictions file against a FinQA split (``06_evaluate.py --score FILE``).

Two formats, detected from the content:

* FinQA's official prediction format: a JSON list of ``{"id": ..., "predicted": [tokens..., "EOF"]}``.
  Scored exactly as the official ``evaluate.py``: execution accuracy (the executed tokens equal
  ``exe_ans``) and program accuracy (``equivalence.equal_program``); lenient accuracy is the lenient check
  (``scoring.compare``) on the executed value.
* Free-text completions: JSONL (or a JSON list) of ``{"id": ..., "completion": "..."}``, scored with
  ``scoring.score_completion``: execution accuracy (strict) and lenient accuracy.

Accuracies are over the scored rows ``n`` (predictions whose id is in the split), as the official
script divides by the number of predictions. The summary (``score_file``'s first value) has:

* ``format``, ``file``, ``split``, ``n``, ``execution_accuracy``, ``lenient_accuracy``,
  ``program_accuracy`` (official format only), ``rel_tol``, and ``data`` (the bundle's ``describe()``);
* ``missing`` (count) and ``missing_ids``: gold ids with no prediction;
* ``unknown_count`` and ``unknown_ids``: ids not in the split;
* ``malformed_rows`` = ``{"count", "lines"}``: lines that are not JSON objects with a string
  ``id`` (or lack the format's field);
* ``duplicate_count`` and ``duplicate_ids``: a repeated id keeps its first row;
* ``program_compare_notes`` (official format only): how many program verdicts were not the
  official symbolic comparison's, almost always a size bound on a long prediction (each such
  verdict says why in its ``program_compare_note``; see ``equivalence.compare_programs``).

Every id / line-number list holds at most ``MAX_LISTED`` entries; the counts are complete.
Nothing in the file can crash scoring. A file in neither format, or one in which no id belongs
to the split (e.g. test predictions scored with ``--split dev``), raises ``ScoreFileError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finreason import console, scoring, stats, storage
from finreason.data import DataError
from finreason.errors import FinReasonError

OFFICIAL = "official"
COMPLETIONS = "completions"
MAX_LISTED = 50  # ids / line numbers listed in the summary; the counts are always complete
VERDICT_KEYS = ("id", "strict", "lenient", "gold")  # what makes a line one of --out's verdicts
MAX_FILE_MB = 256  # far above a predictions file for any FinQA split


class ScoreFileError(FinReasonError, ValueError):
    """The predictions file cannot be scored; the message says why."""


def _rows_from_json_list(items: list[Any]) -> list[tuple[int, Any]]:
    # Position in the list stands in for the line number (1-based, like lines).
    return [(position + 1, item) for position, item in enumerate(items)]


def _rows_from_jsonl(text: str) -> tuple[list[tuple[int, Any]], list[int]]:
    rows, malformed = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, storage.loads_bounded(line)))
        except ValueError:
            malformed.append(number)
    return rows, malformed


def _read_rows(path: Path) -> tuple[list[tuple[int, Any]], list[int], bool]:
    """(rows, malformed line numbers, whether the whole file was too deeply nested to parse)."""
    too_deep = False
    if not path.exists():
        raise ScoreFileError(f"{path}: no such file")
    try:
        text = storage.read_bounded(path, MAX_FILE_MB * 2**20, setting="scorefile.MAX_FILE_MB").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScoreFileError(f"{path}: not UTF-8 text ({error})") from None
    except storage.StorageError as error:
        raise ScoreFileError(str(error)) from None
    if text.lstrip().startswith("["):
        try:
            whole = storage.loads_bounded(text)
        except ValueError:
            whole = None
            # too deep for a JSON list: read on as JSONL, where only the deep lines are lost
            too_deep = not storage.json_depth_ok(text)
        if isinstance(whole, list):
            return _rows_from_json_list(whole), [], False
    rows, malformed = _rows_from_jsonl(text)
    return rows, malformed, too_deep


def _detect(rows: list[tuple[int, Any]], path: Path, too_deep: bool) -> str:
    official = sum(1 for _, row in rows if isinstance(row, dict) and "predicted" in row)
    completions = sum(1 for _, row in rows if isinstance(row, dict) and "completion" in row)
    if official == 0 and completions == 0:
        deep = " (its JSON is nested too deeply to read as one list)" if too_deep else ""
        raise ScoreFileError(
            f"{path}: neither FinQA's official prediction format (a JSON list of "
            '{"id", "predicted": [tokens..., "EOF"]}) nor JSONL of {"id", "completion"}' + deep
        )
    return OFFICIAL if official > completions else COMPLETIONS


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def score_file(path: str | Path, split: str, bundle: Any, rel_tol: float = 0.01) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, one verdict dict per scored prediction) for ``path`` against ``bundle[split]``."""
    path = Path(path)
    try:
        gold_by_id = bundle.by_id(split)
    except DataError as error:
        raise ScoreFileError(str(error)) from None
    rows, malformed, too_deep = _read_rows(path)
    kind = _detect(rows, path, too_deep)
    field = "predicted" if kind == OFFICIAL else "completion"

    verdicts: list[dict[str, Any]] = []
    seen: set[str] = set()
    unknown_ids: list[str] = []
    duplicate_ids: list[str] = []
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or field not in row:
            malformed.append(number)
            continue
        example_id = row["id"]
        example = gold_by_id.get(example_id)
        if example is None:
            unknown_ids.append(example_id)
            continue
        if example_id in seen:
            duplicate_ids.append(example_id)
            continue
        seen.add(example_id)
        if kind == OFFICIAL:
            verdicts.append(_official_verdict(example, row[field], rel_tol))
        else:
            verdicts.append(_completion_verdict(example, row[field], rel_tol))

    n = len(verdicts)
    if n == 0:
        raise ScoreFileError(_no_match_message(path, split, bundle, unknown_ids))
    summary: dict[str, Any] = {
        "format": kind,
        "file": str(path),
        "split": split,
        "n": n,
        "execution_accuracy": _rate(sum(v["strict"] for v in verdicts), n),
        "lenient_accuracy": _rate(sum(v["lenient"] for v in verdicts), n),
    }
    if kind == OFFICIAL:
        summary["program_accuracy"] = _rate(sum(v["program_correct"] for v in verdicts), n)
        summary["program_compare_notes"] = sum(1 for v in verdicts if v["program_compare_note"])
    summary["rel_tol"] = rel_tol
    missing = [example_id for example_id in gold_by_id if example_id not in seen]
    summary["missing"] = len(missing)
    summary["missing_ids"] = missing[:MAX_LISTED]
    summary["unknown_ids"] = unknown_ids[:MAX_LISTED]
    summary["unknown_count"] = len(unknown_ids)
    malformed.sort()
    summary["malformed_rows"] = {"count": len(malformed), "lines": malformed[:MAX_LISTED]}
    summary["duplicate_ids"] = duplicate_ids[:MAX_LISTED]
    summary["duplicate_count"] = len(duplicate_ids)
    summary["data"] = bundle.describe()
    return summary, verdicts


def _no_match_message(path: Path, split: str, bundle: Any, unknown_ids: list[str]) -> str:
    if not unknown_ids:
        return f"{path}: no row has a string id and the format's field, so nothing was scored against the {split!r} split"
    shown = ", ".join(repr(example_id) for example_id in unknown_ids[:3])
    message = f"{path}: none of its {len(unknown_ids)} ids is in the {split!r} split (e.g. {shown})"
    # Only the splits already loaded are checked: loading another split to guess is not cheap.
    unknown = set(unknown_ids)
    for other, examples in getattr(bundle, "splits", {}).items():
        if other != split and any(example.id in unknown for example in examples):
            return f"{message}; they are {other!r} ids: score with --split {other}"
    return f"{message}; are these predictions for another split? (--split)"


def _official_verdict(example: Any, predicted: Any, rel_tol: float) -> dict[str, Any]:
    exe_correct, program_correct, program_note = scoring.official_prediction_verdict(predicted, example)
    value, error = None, None
    if isinstance(predicted, list) and all(isinstance(token, str) for token in predicted):
        value, _, error = scoring.run_tokens(predicted, example.table)
    else:
        error = "predicted is not a list of program tokens"
    _, lenient = scoring.compare(value, example.exe_ans, rel_tol)
    return {
        "id": example.id,
        "strict": exe_correct,
        "lenient": exe_correct or lenient,
        "program_correct": program_correct,
        "program_compare_note": program_note,  # None when the official comparison decided program_correct
        "predicted": value,
        "gold": example.exe_ans,
        "source": "program" if value is not None else "none",
        "error": error,
    }


def _completion_verdict(example: Any, completion: Any, rel_tol: float) -> dict[str, Any]:
    verdict = scoring.score_completion(completion, example.exe_ans, example.table, rel_tol)
    record = {"id": example.id, **verdict.as_dict(), "gold": example.exe_ans}
    if not isinstance(completion, str):
        record["error"] = f"completion is {type(completion).__name__}, not a string"
    return record


def _fmt(value: Any) -> str:
    if value is None or isinstance(value, float):
        return stats.percent(value, digits=2)
    return str(value)


def format_summary_table(summary: dict[str, Any]) -> str:
    """A small aligned text table of a ``score_file`` summary, for printing."""
    rows = [
        ("file", summary.get("file", "")),
        ("format", summary.get("format", "")),
        ("split", summary.get("split", "")),
        ("scored (n)", summary.get("n", 0)),
        ("execution accuracy", _fmt(summary.get("execution_accuracy"))),
        (f"lenient accuracy (rel_tol {summary.get('rel_tol')})", _fmt(summary.get("lenient_accuracy"))),
    ]
    if "program_accuracy" in summary:
        rows.append(("program accuracy", _fmt(summary["program_accuracy"])))
    malformed = summary.get("malformed_rows") or {}
    rows += [
        ("missing (gold ids not predicted)", summary.get("missing", 0)),
        ("unknown ids (not in split)", summary.get("unknown_count", len(summary.get("unknown_ids", [])))),
        ("malformed rows", malformed.get("count", 0)),
        ("duplicate ids", summary.get("duplicate_count", len(summary.get("duplicate_ids", [])))),
    ]
    if summary.get("program_compare_notes"):
        rows.append(("program verdicts not compared officially", f"{summary['program_compare_notes']} (see program_compare_note)"))
    data = summary.get("data") or {}
    if data:
        kind = "full release" if data.get("full_release") else "SUBSET"
        rows.append(("data", f"{data.get('source')} ({kind}) {data.get('location')}"))
    lines = [console.table(rows, ("field", "value"), left=("field", "value"))]
    unknown = summary.get("unknown_ids") or []
    if unknown:
        lines.append(f"unknown ids: {', '.join(map(str, unknown[:10]))}{' ...' if len(unknown) > 10 else ''}")
    if malformed.get("lines"):
        lines.append(f"malformed lines: {', '.join(map(str, malformed['lines'][:10]))}{' ...' if malformed.get('count', 0) > 10 else ''}")
    return "\n".join(lines)

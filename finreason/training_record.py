"""What a finished training stage records beside its weights: ``training_summary.json``.

One typed record, ``TrainingRecord``: 04_train_sft.py and 05_train_grpo.py write it when they
save (``training.save_stage``; 04 adds its closing evaluation), and the loader, the app, the
rehearsal's checks and the stale-weights check read it. 08_export.py writes the same file into
the folder it exports (``exported_from`` is its key). The file's name and keys are the ones older
versions wrote, so their folders load: a missing key reads as None, a value of the wrong type
too (a damaged record is unknown, not a crash), and keys this version does not know are kept.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finreason import storage

TRAINING_SUMMARY = "training_summary.json"

# field metadata: written only by that stage's trainer (an SFT record has no "steps" key)
_SFT = {"stage": "sft"}
_GRPO = {"stage": "grpo"}
# field metadata: absent from the file until set (a run saved with --no-eval has no "evaluation")
_WHEN_SET = {"when_set": True}


@dataclass(frozen=True)
class TrainingRecord:
    """One stage's ``training_summary.json``; fields in the file's key order."""

    stage: str | None = None
    weights: str | None = None  # the folder the weights were installed in
    weights_kind: str | None = None  # "adapter" or "model"
    weights_sha256: str | None = None
    base_model: str | None = None
    evidence_mode: str | None = None
    retriever: dict[str, Any] | None = None  # None for gold facts (retrieval.used_by)
    sft_weights: str | None = field(default=None, metadata=_GRPO)  # the weights GRPO continued
    sft_weights_sha256: str | None = field(default=None, metadata=_GRPO)
    train_data: str | None = None
    candidates: int | None = field(default=None, metadata=_GRPO)  # questions before the difficulty filter
    train_rows: int | None = None
    skipped_too_long: list[str] | None = field(default=None, metadata=_SFT)  # ids over MAX_SEQ_LEN
    difficulty_filter: dict[str, Any] | None = field(default=None, metadata=_GRPO)
    global_step: int | None = None
    resumed_from: str | None = None  # the checkpoint a killed run continued from
    first_loss: float | None = field(default=None, metadata=_SFT)
    final_loss: float | None = field(default=None, metadata=_SFT)
    train_runtime_s: float | None = None
    trainable_parameters: int | None = field(default=None, metadata=_SFT)
    epoch_choice: dict[str, Any] | None = field(default=None, metadata={**_SFT, **_WHEN_SET})  # epoch_choice.restore_best (SFT_HOLDOUT > 0)
    use_vllm: bool | None = field(default=None, metadata=_GRPO)
    precision: str | None = None
    model_info: dict[str, Any] | None = field(default=None, metadata=_SFT)  # models.LoadedModel.info
    steps: list[dict[str, Any]] | None = field(default=None, metadata=_GRPO)  # 05's step_brief per step
    mixed_group_share: float | None = field(default=None, metadata=_GRPO)
    reward_errors: dict[str, Any] | None = field(default=None, metadata=_GRPO)
    exported_from: dict[str, Any] | None = field(default=None, metadata=_WHEN_SET)  # 08's merged folder only
    provenance: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = field(default=None, metadata=_WHEN_SET)  # training.evaluation_brief
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept

    @classmethod
    def from_dict(cls, found: Any) -> TrainingRecord:
        """The record a parsed file holds; anything but a JSON object is an empty record."""
        if not isinstance(found, dict):
            return cls()
        known = {name: value for name, value in found.items() if name in _HINTS}
        return cls(
            **{name: value for name, value in known.items() if _fits(value, _HINTS[name])},
            extra={name: value for name, value in found.items() if name not in _HINTS},
        )

    @classmethod
    def read(cls, folder: str | os.PathLike) -> TrainingRecord:
        """The record beside the weights in ``folder``; empty when it is missing or unreadable."""
        return cls.from_dict(storage.read_json_object(Path(folder) / TRAINING_SUMMARY))

    def as_dict(self) -> dict[str, Any]:
        """The file's content: every field but another stage's and unset optional ones, then ``extra``."""
        written = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            stage = spec.metadata.get("stage")
            if spec.name == "extra" or (stage and stage != self.stage) or (value is None and spec.metadata.get("when_set")):
                continue
            written[spec.name] = value
        return {**written, **self.extra}

    def write(self, folder: str | os.PathLike) -> Path:
        return storage.atomic_write_json(Path(folder) / TRAINING_SUMMARY, self.as_dict())


_HINTS = {name: hint for name, hint in typing.get_type_hints(TrainingRecord).items() if name != "extra"}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a parsed JSON value has the field's type (its container type, not the items')."""
    if value is None:
        return True
    if isinstance(hint, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint) if arg is not type(None))
    kind = typing.get_origin(hint) or hint
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))  # JSON writes 2.0 as 2.0, but a hand-edited 2 is a float too
    return isinstance(value, kind)

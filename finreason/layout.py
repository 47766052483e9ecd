"""Where everything lives under ``OUTPUT_DIR``: the one owner of the outputs layout.

Scripts, the evaluator, the analysis, the app and the benchmarks ask a ``Layout`` for paths
instead of joining them, so a folder is named in one place::

    check_env.json                       00
    explore/                             01
    models/<name>/                       a .gguf base converted once to safetensors
    data/  sft_train.jsonl sft_dev.jsonl grpo_train.jsonl manifest.json          03
    sft/   run.json checkpoints/ runs/ step_log.jsonl adapter/ | model/ archive/   04
    grpo/  difficulty_samples.jsonl difficulty_filter.json run.json checkpoints/
           runs/ step_log.jsonl adapter/ | model/ archive/                        05
    .finreason.lock                      the one writer's PID and command (finreason.outputlock)
    eval/  <stage>.jsonl <stage>.summary.json <stage>.test_predictions.json comparison.json
    eval/questions/  <file>.<stage>.jsonl <file>.<stage>.summary.json <file>.comparison.json
                     (06 --questions FILE: a file of your own questions)
    report.md  figures/  analysis.json                                           07
    export/ merged/ model-f16.gguf model-q8_0.gguf Modelfile export.json       08
    bench/<name>.json                                                            benchmarks

A trained stage keeps its weights in ``adapter/`` (FINETUNE=lora: a PEFT adapter) or ``model/``
(FINETUNE=full: a whole model folder); saving one kind moves the other to ``<stage>/archive/``,
so a stage has one. ``run.json`` names the run its checkpoints and step log belong to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Evaluated stages in pipeline order, and the command that evaluates each.
STAGES = ("zero_shot", "sft", "grpo")
TRAINED_STAGES = ("sft", "grpo")
EVALUATED_BY = {
    "zero_shot": "02_zero_shot_baseline.py",
    "sft": "06_evaluate.py --stage sft (after 04_train_sft.py)",
    "grpo": "06_evaluate.py --stage grpo (after 05_train_grpo.py)",
}
TRAINED_BY = {"sft": "04_train_sft.py", "grpo": "05_train_grpo.py"}
ADAPTER, MODEL = "adapter", "model"
ADAPTER_MARKER = "adapter_config.json"
MODEL_MARKER = "config.json"
STEP_LOG = "step_log.jsonl"
RUN_RECORD = "run.json"


def weights_kind(folder: str | os.PathLike) -> str | None:
    """"adapter", "model" or None: what a weights folder holds, from its marker file."""
    folder = Path(folder)
    if (folder / ADAPTER_MARKER).is_file():
        return ADAPTER
    if (folder / MODEL_MARKER).is_file():
        return MODEL
    return None


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def of(cls, cfg: Any) -> "Layout":
        return cls(Path(cfg.OUTPUT_DIR))

    # --- 00, 01, models
    @property
    def check_env(self) -> Path:
        return self.root / "check_env.json"

    @property
    def explore_dir(self) -> Path:
        return self.root / "explore"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def retriever_dir(self) -> Path:
        """Fitted fact rankers, one file per train-data hash and feature version (finreason.retrieval)."""
        return self.root / "retriever"

    # --- 03
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def sft_train(self) -> Path:
        return self.data_dir / "sft_train.jsonl"

    @property
    def sft_dev(self) -> Path:
        return self.data_dir / "sft_dev.jsonl"

    @property
    def grpo_train(self) -> Path:
        return self.data_dir / "grpo_train.jsonl"

    @property
    def data_manifest(self) -> Path:
        return self.data_dir / "manifest.json"

    # --- 04, 05
    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def checkpoints(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoints"

    def runs(self, stage: str) -> Path:
        return self.stage_dir(stage) / "runs"

    def step_log(self, stage: str) -> Path:
        return self.stage_dir(stage) / STEP_LOG

    def run_record(self, stage: str) -> Path:
        """The settings, data hash and starting weights of the run the checkpoints and step log belong to."""
        return self.stage_dir(stage) / RUN_RECORD

    def saving(self, stage: str) -> Path:
        """Where a final save is staged until weights, tokenizer, summary and card are all written."""
        return self.stage_dir(stage) / ".saving"

    def weights_archive(self, stage: str) -> Path:
        """Weights of the other kind (adapter <-> model) that a new save moved aside."""
        return self.stage_dir(stage) / "archive"

    def weights_dir(self, stage: str, kind: str) -> Path:
        """Where a stage's weights of ``kind`` ("adapter" or "model") are saved."""
        return self.stage_dir(stage) / kind

    def weights(self, stage: str) -> Path | None:
        """The trained stage's weights folder (adapter or whole model), or None before training."""
        for kind in (ADAPTER, MODEL):
            folder = self.weights_dir(stage, kind)
            if weights_kind(folder) == kind:
                return folder
        return None

    @property
    def difficulty_samples(self) -> Path:
        return self.stage_dir("grpo") / "difficulty_samples.jsonl"

    @property
    def difficulty_report(self) -> Path:
        return self.stage_dir("grpo") / "difficulty_filter.json"

    # --- 02, 06
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_records(self, stage: str) -> Path:
        return self.eval_dir / f"{stage}.jsonl"

    def eval_summary(self, stage: str) -> Path:
        return self.eval_dir / f"{stage}.summary.json"

    def test_predictions(self, stage: str) -> Path:
        return self.eval_dir / f"{stage}.test_predictions.json"

    @property
    def eval_archive(self) -> Path:
        return self.eval_dir / "archive"

    @property
    def comparison(self) -> Path:
        return self.eval_dir / "comparison.json"

    # --- 06 --questions FILE: named after the file, so two files keep their own results
    @property
    def questions_dir(self) -> Path:
        return self.eval_dir / "questions"

    def question_records(self, questions_file: str | os.PathLike, stage: str) -> Path:
        return self.questions_dir / f"{Path(questions_file).stem}.{stage}.jsonl"

    def question_summary(self, questions_file: str | os.PathLike, stage: str) -> Path:
        return self.questions_dir / f"{Path(questions_file).stem}.{stage}.summary.json"

    def question_comparison(self, questions_file: str | os.PathLike) -> Path:
        return self.questions_dir / f"{Path(questions_file).stem}.comparison.json"

    @property
    def questions_archive(self) -> Path:
        return self.questions_dir / "archive"

    # --- 07
    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis.json"

    # --- 08
    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    # --- benchmarks
    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    def bench_result(self, name: str) -> Path:
        return self.bench_dir / f"{name}.json"

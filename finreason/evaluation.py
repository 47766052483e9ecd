"""Evaluating a stage: the one entry (``run_stage``) for 02, 04, 06, the benchmarks and the app.

``run_stage`` loads the split's first N examples, the base model plus the stage's trained
weights, and calls ``evaluate``, which builds the SAME prompt for every stage
(``prompts.prompt_from_cfg``), generates greedily (``finreason.generation``), scores with
``scoring.score_completion`` only, and appends one JSONL record per example as each batch
finishes: a killed run resumes where it stopped, never duplicating an id. Records from a
different run (other model, weights, split, evidence mode or prompt settings) are moved to
``eval/archive/`` instead of being mixed in. Then it writes the summary (``stats.summarize``),
FinQA's official prediction file on the test split, and the paired comparison of every stage
evaluated so far.

``answer_questions`` / ``run_questions`` do the same for a file of your own questions
(``finreason.questions``: no gold program, an answer only where the file gives one);
``compare_questions`` pairs two stages on one such file.

Both are one loop, ``evaluate_items`` (resume, rescore, generate, write, summarise), under one
entry that loads a stage's model, ``run_job``. What differs between FinQA examples and questions
(an item's verdict key, its prompt, its record, the summary) is an ``ItemKind``:
``ExampleKind`` or ``QuestionKind``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

from finreason import console, data, equivalence, generation, models, programs, prompts, questions, retrieval, retriever_labels, scoring, stats, storage
from finreason.errors import FinReasonError
from finreason.layout import STAGES, TRAINED_BY, Layout
from finreason.provenance import provenance

_LOG = logging.getLogger(__name__)

RECORD_FIELDS = (
    "id", "split", "run", "prompt_tokens", "completion_tokens", "completion", "program", "answer_text",
    "predicted", "gold", "strict", "lenient", "program_correct", "program_note", "source", "error",
    "evidence_source", "operations", "num_steps", "rel_tol", "verdict_key",
)


class EvaluationError(FinReasonError):
    """A stage cannot be evaluated as asked (no trained weights, weights for another stage)."""


def run_fingerprint(loaded: Any, cfg: Any, split: str | None) -> str:
    """Everything that changes a completion; records of another run are never reused."""
    parts = {
        "model_path": loaded.info.get("model_path"),
        "weights_sha256": loaded.info.get("weights_sha256"),
        "quantization": loaded.info.get("quantization"),
        "dtype": loaded.info.get("dtype"),
        "split": split,
        "evidence_mode": cfg.EVIDENCE_MODE,
        "budget": cfg.PROMPT_TOKEN_BUDGET,
        "retriever": {key: value for key, value in retrieval.describe_in_use(cfg).items() if key not in ("cache", "label")},
        "few_shot": cfg.FEW_SHOT_EXAMPLE,
        "max_new_tokens": cfg.MAX_NEW_TOKENS,
        "system_prompt": hashlib.sha256(prompts.system_prompt_from_cfg(cfg).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_resumable(path: Path, run: str, archive_dir: Path) -> dict[str, dict[str, Any]]:
    """Records already written by this run, by id; damaged lines are dropped (and logged),
    another run's file is archived so its results are neither lost nor mixed in."""
    if not path.exists():
        return {}
    storage.repair_jsonl(path)
    existing = list(storage.read_jsonl(path))
    if any(record.get("run") != run for record in existing):
        archive = archive_dir / f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, archive)
        _LOG.info("%s came from a different run (model, weights, split or prompt settings); moved to %s", path, archive)
        return {}
    done: dict[str, dict[str, Any]] = {}
    for record in existing:
        done.setdefault(str(record.get("id")), record)
    if len(done) != len(existing):
        storage.write_jsonl(path, done.values())
    return done


def verdict_key(rel_tol: float, *gold: Any) -> str:
    """Everything besides the completion that a verdict depends on: the tolerance and the gold
    side (answer, table, program, scale). Stored on each record; a record whose key differs is
    rescored from its completion."""
    return hashlib.sha256(json.dumps([rel_tol, *gold], sort_keys=True, default=str).encode()).hexdigest()[:16]


def score_record(example: Any, completion: str, rel_tol: float) -> dict[str, Any]:
    """Score one completion (scoring.score_completion, the one check) into a record's fields."""
    verdict = scoring.score_completion(completion, example.exe_ans, example.table, rel_tol=rel_tol)
    program_correct, program_note = None, None
    if verdict.program:
        comparison = equivalence.compare_programs(programs.tokenize(example.program), programs.tokenize(verdict.program))
        program_correct, program_note = comparison.equal, comparison.reason
    predicted = verdict.predicted
    if isinstance(predicted, float) and not math.isfinite(predicted):
        predicted = str(predicted)
    return {
        "id": example.id,
        "completion": completion,
        "program": verdict.program,
        "answer_text": verdict.answer_text,
        "predicted": predicted,
        "gold": example.exe_ans,
        "strict": bool(verdict.strict),
        "lenient": bool(verdict.lenient),
        "program_correct": program_correct,
        "program_note": program_note,
        "source": verdict.source,
        "error": verdict.error,
        "evidence_source": example.evidence_source,
        "operations": example.operations,
        "num_steps": example.num_steps,
    }


# --- what differs between FinQA examples and a file of questions ----------------------------------

class Prompt(NamedTuple):
    text: str
    # the record fields the prompt decided (a question's evidence): stored, so a rescore reads them back
    kept: Mapping[str, Any]


class ItemKind(Protocol):
    """What one kind of item supplies to ``evaluate_items``; the loop does everything else."""

    cfg: Any  # the settings its prompts, verdicts, summary and generation use
    noun: str  # the items in the log: "examples", "questions"
    fields: Sequence[str]  # a record's keys, in order
    in_item_order: bool  # whether the finished records file is rewritten in the items' order

    @property
    def scope(self) -> str | None:
        """What the run fingerprint names besides the model and the settings (the split, the file)."""

    @property
    def progress_label(self) -> str: ...

    def verdict_key_of(self, item: Any) -> str: ...

    def prompt(self, item: Any, tokenizer: Any) -> Prompt: ...

    def record(self, item: Any, completion: str, kept: Mapping[str, Any]) -> dict[str, Any]:
        """The record's fields from the item and its completion: verdicts and what the item adds;
        ``kept`` is the prompt's ``Prompt.kept`` (on a rescore, the stored record)."""

    def summarize(self, records: Sequence[Mapping[str, Any]], loaded: Any) -> dict[str, Any]:
        """The statistics and what was evaluated; the loop adds the run's own fields."""

    def provenance_fields(self, loaded: Any) -> dict[str, Any]:
        """What a written summary's provenance names besides the settings."""


def _model_provenance(loaded: Any) -> dict[str, Any]:
    info = loaded.info
    return {"model": info.get("base_model"), "weights": info.get("weights"), "weights_sha256": info.get("weights_sha256"),
            "loader": info.get("loader"), "model_info": info}


@dataclass(frozen=True)
class ExampleKind:
    """FinQA examples of one split: evidence as EVIDENCE_MODE says, the gold program and answer."""

    cfg: Any
    stage: str
    split: str | None
    data: Mapping[str, Any] | None = None  # the data files, as FinQA.describe() names them
    noun: ClassVar[str] = "examples"
    fields: ClassVar[tuple[str, ...]] = RECORD_FIELDS
    # read by id (comparison, official predictions), so its file stays in generation order
    in_item_order: ClassVar[bool] = False

    @property
    def scope(self) -> str | None:
        return self.split

    @property
    def progress_label(self) -> str:
        return f"eval {self.stage}"

    def verdict_key_of(self, example: Any) -> str:
        return verdict_key(self.cfg.LENIENT_REL_TOL, example.exe_ans, example.table, example.program)

    def prompt(self, example: Any, tokenizer: Any) -> Prompt:
        return Prompt(prompts.prompt_from_cfg(example, tokenizer, self.cfg), {})

    def record(self, example: Any, completion: str, kept: Mapping[str, Any]) -> dict[str, Any]:
        return {**score_record(example, completion, self.cfg.LENIENT_REL_TOL), "split": self.split}

    def summarize(self, records: Sequence[Mapping[str, Any]], loaded: Any) -> dict[str, Any]:
        summary = stats.summarize(records, self.cfg.BOOTSTRAP_SAMPLES, self.cfg.SEED)
        summary.update(stage=self.stage, split=self.split, evidence_mode=self.cfg.EVIDENCE_MODE,
                       retriever=retrieval.used_by(self.cfg), rel_tol=self.cfg.LENIENT_REL_TOL)
        return summary

    def provenance_fields(self, loaded: Any) -> dict[str, Any]:
        return {"data": dict(self.data) if self.data else None, **_model_provenance(loaded), "split": self.split}


@dataclass(frozen=True)
class QuestionKind:
    """A file of your own questions: retrieved evidence always (they have no gold facts), verdicts
    only where the file gives an answer. Build it with ``QuestionKind.of``."""

    cfg: Any
    stage: str
    found: questions.QuestionFile
    noun: ClassVar[str] = "questions"
    fields: ClassVar[tuple[str, ...]] = questions.RECORD_FIELDS
    # people read it beside their file (and the app's answers table), so it reads in the file's order
    in_item_order: ClassVar[bool] = True

    @classmethod
    def of(cls, cfg: Any, stage: str, found: questions.QuestionFile) -> QuestionKind:
        return cls(cfg if cfg.EVIDENCE_MODE == "retrieved" else cfg.replace(EVIDENCE_MODE="retrieved"), stage, found)

    @property
    def scope(self) -> str:
        return f"questions:{self.found.sha256}"

    @property
    def progress_label(self) -> str:
        return f"questions {self.stage}"

    def verdict_key_of(self, question: Any) -> str:
        return verdict_key(self.cfg.LENIENT_REL_TOL, question.answer, question.table, question.scale)

    def prompt(self, question: Any, tokenizer: Any) -> Prompt:
        evidence = prompts.evidence_from_cfg(question, tokenizer, self.cfg, "retrieved")
        text = prompts.prompt_from_cfg(question, tokenizer, self.cfg, "retrieved", evidence)
        return Prompt(text, {"evidence_ids": evidence.kept_ids, "evidence": evidence.text})

    def record(self, question: Any, completion: str, kept: Mapping[str, Any]) -> dict[str, Any]:
        return questions.answer_record(question, kept.get("evidence_ids") or [], kept.get("evidence") or "", completion,
                                       self.cfg.LENIENT_REL_TOL)

    def summarize(self, records: Sequence[Mapping[str, Any]], loaded: Any) -> dict[str, Any]:
        retriever = retrieval.describe_in_use(self.cfg)
        summary = questions.summarize(records, self.found, self.cfg.BOOTSTRAP_SAMPLES, self.cfg.SEED)
        summary.update(stage=self.stage, evidence_mode="retrieved", retriever=retriever, rel_tol=self.cfg.LENIENT_REL_TOL,
                       evidence=prompts.evidence_label("retrieved", retriever), model=loaded.info.get("base_model"),
                       weights=loaded.info.get("weights"))
        return summary

    def provenance_fields(self, loaded: Any) -> dict[str, Any]:
        return {**_model_provenance(loaded), "split": f"questions:{self.found.name}"}


@dataclass(frozen=True)
class Job:
    """One evaluation: its items, their kind, and where it is written."""

    kind: ItemKind
    items: Sequence[Any]
    records: Path | None  # the resumable records file; None keeps the records in memory (the app)
    archive: Path | None = None  # where a records file of another run is moved (default: archive/ beside it)
    summary: Path | None = None  # where the summary is written with its provenance; None returns it only


# --- the one evaluation loop -----------------------------------------------------------------------

def rescore_changed(done: dict[str, dict[str, Any]], items: Mapping[str, Any], kind: ItemKind, path: Path) -> dict[str, dict[str, Any]]:
    """Stored records whose verdicts were made under another ``verdict_key`` (another
    LENIENT_REL_TOL or gold side, or before records named it), rescored from their stored
    completion: the completion does not depend on scoring, so it is not regenerated.
    ``items`` are the examples or questions by id. The file is rewritten when anything changed."""
    changed = [key for key, record in done.items() if key in items and record.get("verdict_key") != kind.verdict_key_of(items[key])]
    if not changed:
        return done
    for key in changed:
        item, stored = items[key], done[key]
        merged = {**stored, **kind.record(item, stored["completion"], stored), "rel_tol": kind.cfg.LENIENT_REL_TOL,
                  "verdict_key": kind.verdict_key_of(item)}
        done[key] = {field: merged.get(field) for field in kind.fields}
    storage.write_jsonl(path, done.values())
    _LOG.info("%s: rescored %d stored completions (LENIENT_REL_TOL or the gold side changed; completions kept)", path, len(changed))
    return done


def evaluate_items(loaded: Any, job: Job, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answer every item of ``job`` once: reuse the records this run already wrote (rescoring
    those whose verdict inputs changed), generate the rest, appending each batch's records as it
    finishes, and summarise. Returns the records in item order and the summary (no provenance:
    ``save_summary`` adds it where the summary is written)."""
    started = time.time()
    kind, path = job.kind, job.records
    cfg = kind.cfg
    run = run_fingerprint(loaded, cfg, kind.scope)
    done = load_resumable(path, run, job.archive or path.parent / "archive") if path is not None else {}
    unique = list({item.id: item for item in job.items}.values())
    if path is not None:
        done = rescore_changed(done, {item.id: item for item in unique}, kind, path)
    todo = [item for item in unique if item.id not in done]
    if done:
        _LOG.info("resuming %s: %d of %d %s already done", path, len(unique) - len(todo), len(unique), kind.noun)
    prompted = [kind.prompt(item, loaded.tokenizer) for item in todo]

    def make_record(index: int, completion: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        item = todo[index]
        record = kind.record(item, completion, prompted[index].kept)
        record.update(run=run, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      rel_tol=cfg.LENIENT_REL_TOL, verdict_key=kind.verdict_key_of(item))
        return {key: record.get(key) for key in kind.fields}

    new, generation_s, use_vllm = generate_records(loaded, [prompt.text for prompt in prompted], cfg, make_record, path,
                                                   kind.progress_label, progress)
    done.update((record["id"], record) for record in new)
    final = [done[item.id] for item in unique]
    if kind.in_item_order and path is not None and new:
        # batches finish longest prompt first; records of items not asked this time go last
        asked = {item.id for item in unique}
        storage.write_jsonl(path, [*final, *(record for key, record in done.items() if key not in asked)])
    summary = kind.summarize(final, loaded)
    summary.update(
        run=run,
        records=str(path) if path is not None else None,
        generated_this_run=len(todo),
        generation_seconds=round(generation_s, 2),
        wall_seconds=round(time.time() - started, 2),
        generator="vllm" if use_vllm else "transformers-batched",
    )
    return final, summary


def save_summary(job: Job, summary: dict[str, Any], cfg: Any, loaded: Any) -> None:
    """Write the summary where ``job`` says, with the provenance of ``cfg``: the settings as the
    command gave them (a question file is answered with retrieved evidence whatever they say)."""
    if job.summary is None:
        return
    summary["provenance"] = provenance(cfg, **job.kind.provenance_fields(loaded))
    storage.atomic_write_json(job.summary, summary)


def generate_records(loaded: Any, rendered: Sequence[str], cfg: Any, make_record: Any, path: Path | None,
                     desc: str, progress: bool = True) -> tuple[list[dict[str, Any]], float, bool]:
    """Generate a completion for every prompt (greedy; longest first, EVAL_BATCH_SIZE at a time, or
    vLLM) and append each batch's records (``make_record(index, completion, prompt_tokens,
    completion_tokens)``) to ``path`` as it finishes, so a killed run resumes. Returns the records
    in prompt order, the generation seconds and whether vLLM generated."""
    from tqdm.auto import tqdm

    tokenizer = loaded.tokenizer
    lengths = [len(ids) for ids in tokenizer(list(rendered), add_special_tokens=False)["input_ids"]] if rendered else []
    # longest first: similar lengths share a batch (little padding) and memory trouble shows at once
    order = sorted(range(len(rendered)), key=lambda index: -lengths[index])
    use_vllm = bool(rendered) and generation.vllm_usable(cfg)
    generation_s = 0.0
    made: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(rendered), desc=desc, unit="ex", disable=not progress)
    try:
        step = len(order) if use_vllm else cfg.EVAL_BATCH_SIZE
        for start in range(0, len(order), step):
            chunk = order[start:start + step]
            tick = time.time()
            chunk_prompts = [rendered[index] for index in chunk]
            if use_vllm:
                completions = generation.generate_vllm(loaded, chunk_prompts, cfg.MAX_NEW_TOKENS)
            else:
                completions = generation.generate(loaded, chunk_prompts, cfg.MAX_NEW_TOKENS, cfg.EVAL_BATCH_SIZE, progress=False)
            generation_s += time.time() - tick
            batch = []
            for index, completion in zip(chunk, completions):
                completion_tokens = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
                made[index] = make_record(index, completion, lengths[index], completion_tokens)
                batch.append(made[index])
            if path is not None:
                storage.append_jsonl(path, batch)
            bar.update(len(chunk))
    finally:
        bar.close()
    return [made[index] for index in sorted(made)], generation_s, use_vllm


# --- the entries: a loaded model (tests, the app) or a stage's model (02, 04, 06) -------------------

def evaluate(
    loaded: Any,
    examples: Sequence[Any],
    cfg: Any,
    stage: str,
    *,
    split: str | None = None,
    data: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``examples``; write eval/<stage>.jsonl (resumable) and eval/<stage>.summary.json."""
    job = _examples_job(cfg, examples, stage, split, data)
    _, summary = evaluate_items(loaded, job, progress)
    save_summary(job, summary, cfg, loaded)
    return summary


def answer_questions(loaded: Any, found: questions.QuestionFile, cfg: Any, stage: str, *, path: Path | None = None,
                     limit: int = 0, archive: Path | None = None, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answer the first ``limit`` (0 = all) questions of ``found`` (``questions.QuestionFile``) with
    retrieved evidence (they have no gold facts) and the SAME prompt as every stage; append one
    record per question to ``path`` as each batch finishes (resumable like ``evaluate``; None keeps
    them in memory, as the app does). Returns the records in file order and their summary."""
    return evaluate_items(loaded, _questions_job(cfg, stage, found, path, limit, archive), progress)


def _examples_job(cfg: Any, examples: Sequence[Any], stage: str, split: str | None,
                  described: Mapping[str, Any] | None) -> Job:
    where = Layout.of(cfg)
    kind = ExampleKind(cfg, stage, split, described)
    return Job(kind, examples, where.eval_records(stage), where.eval_archive, where.eval_summary(stage))


def _split_job(cfg: Any, stage: str, split: str, limit: int) -> Job:
    bundle = data.load_from_config(cfg, splits=(split,))
    return _examples_job(cfg, data.first(bundle[split], limit), stage, split, bundle.describe())


def _questions_job(cfg: Any, stage: str, found: questions.QuestionFile, path: Path | None, limit: int, archive: Path | None,
                   summary: Path | None = None) -> Job:
    chosen = found.questions[:limit] if limit else list(found.questions)
    return Job(QuestionKind.of(cfg, stage, found), chosen, path, archive, summary)


def stage_weights(cfg: Any, stage: str, weights: str | os.PathLike | None = None) -> Path | None:
    """The weights a stage is evaluated with: none for zero-shot, else ``weights`` or the stage's own."""
    if stage == "zero_shot":
        if weights:
            raise EvaluationError("the zero_shot stage evaluates the base model; drop --weights (or choose --stage sft/grpo)")
        return None
    found = Path(weights) if weights else Layout.of(cfg).weights(stage)
    if found is None:
        raise EvaluationError(
            f"no trained {stage.upper()} weights under {Layout.of(cfg).stage_dir(stage)}: run {TRAINED_BY[stage]} first "
            "(with the same --OUTPUT_DIR/--PROFILE), or pass --weights FOLDER"
        )
    return found


def run_job(cfg: Any, stage: str, weights: str | os.PathLike | None, prepare: Callable[[], Job],
            progress: bool = True) -> tuple[Job, dict[str, Any]]:
    """Run a stage's model over a job: the weights are found (or refused) and ``prepare()`` reads
    the items and claims the outputs before the model loads, so a wrong stage, split or file fails
    in seconds; then ``evaluate_items`` and the summary, written with the provenance of ``cfg``.
    Returns the job and its summary."""
    import torch  # heavy: only a run that loads a model imports it (06 --score does not)

    found = stage_weights(cfg, stage, weights)
    job = prepare()
    torch.manual_seed(cfg.SEED)
    loaded = models.load_model(cfg, weights=found)
    _, summary = evaluate_items(loaded, job, progress)
    save_summary(job, summary, cfg, loaded)
    return job, summary


def run_stage(cfg: Any, stage: str, weights: str | os.PathLike | None = None, split: str | None = None,
              limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``stage`` on the first ``limit`` examples of ``split`` (defaults EVAL_SPLIT,
    EVAL_LIMIT; 0 = all); write its records, summary, official predictions (test split) and the
    comparison of every stage evaluated so far. Returns the summary."""
    split = split or cfg.EVAL_SPLIT
    limit = cfg.EVAL_LIMIT if limit is None else limit
    job, summary = run_job(cfg, stage, weights, partial(_split_job, cfg, stage, split, limit), progress)
    where = Layout.of(cfg)
    if split == "test":
        done = read_stage(where, stage)
        path = write_official_predictions([done[e.id] for e in job.items if e.id in done], where.test_predictions(stage))
        _LOG.info("official-format predictions: %s", path)
    table = compare_stages(where, STAGES)
    if len(table["stages"]) > 1:
        _LOG.info("\n%s", format_comparison(table))
        storage.atomic_write_json(where.comparison, {**table, "provenance": provenance(cfg, data=job.kind.data)})
    return summary


# --- a file of your own questions (06 --questions FILE, the app) -----------------------------------

def run_questions(cfg: Any, stage: str, questions_file: str | os.PathLike, weights: str | os.PathLike | None = None,
                  limit: int | None = None, out: str | os.PathLike | None = None, progress: bool = True,
                  overwrite: bool = False) -> dict[str, Any]:
    """``06_evaluate.py --questions FILE --stage S``: answer (and score, where answers are given)
    every question of FILE (the first ``limit`` when given); records to ``out`` or eval/questions/<file>.<stage>.jsonl, the summary
    to eval/questions/<file>.<stage>.summary.json. Returns the summary."""
    # EVAL_LIMIT slices FinQA's splits (the cpu profile's 50); a question file is answered whole unless --limit
    prepare = partial(_question_file_job, cfg, stage, questions_file, limit or 0, out, overwrite)
    _, summary = run_job(cfg, stage, weights, prepare, progress)
    return summary


def _question_file_job(cfg: Any, stage: str, questions_file: str | os.PathLike, limit: int, out: str | os.PathLike | None,
                       overwrite: bool) -> Job:
    found = questions.read_questions(questions_file, limit)
    where = Layout.of(cfg)
    # a user-named --out resumes only a records file of this kind; never the user's own file
    path = (storage.claim_output(out, questions.RECORD_KEYS, overwrite, not_same_as=[questions_file]) if out
            else where.question_records(questions_file, stage))
    path.parent.mkdir(parents=True, exist_ok=True)
    return _questions_job(cfg, stage, found, path, limit, where.questions_archive, where.question_summary(questions_file, stage))


def compare_questions(cfg: Any, questions_file: str | os.PathLike, first: str, second: str) -> dict[str, Any]:
    """``06_evaluate.py --compare A B --questions FILE``: the two stages' verdicts on the questions
    of FILE that give an answer and that both answered, with exact McNemar tests (strict and
    tolerant); refuses results from an older version of the file."""
    if first == second:
        raise EvaluationError(f"--compare needs two different stages, got {first} twice")
    found = questions.read_questions(questions_file)
    where = Layout.of(cfg)
    verdicts: dict[str, dict[str, dict[str, Any]]] = {}
    for stage in (first, second):
        summary_path = where.question_summary(questions_file, stage)
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise EvaluationError(f"no results of {stage} on {questions_file} ({summary_path}): run "
                                  f"06_evaluate.py --questions {questions_file} --stage {stage} first") from None
        if summary.get("questions_sha256") != found.sha256:
            raise EvaluationError(f"{questions_file} changed since {stage} answered it: run 06_evaluate.py --questions {questions_file} --stage {stage} again")
        records = storage.read_jsonl(summary.get("records") or where.question_records(questions_file, stage))
        verdicts[stage] = {str(r["id"]): r for r in records if r.get("run") == summary.get("run") and r.get("strict") is not None}
    shared = [question.id for question in found.questions if all(question.id in verdicts[stage] for stage in (first, second))]
    table = {"questions_file": str(questions_file), "shared_ids": len(shared)}
    for rule, name in (("strict", "execution_accuracy"), ("tolerant", "tolerant_accuracy")):
        table[rule] = stats.paired_table({stage: [bool(verdicts[stage][i].get(rule)) for i in shared] for stage in (first, second)})
        for row in table[rule]["stages"]:
            row[name] = row.pop("execution_accuracy")
    storage.atomic_write_json(where.question_comparison(questions_file), table)
    return table


def format_question_summary(summary: Mapping[str, Any]) -> str:
    """A few human lines for the console; ``--json`` prints everything."""
    pct = stats.percent

    def line(label: str, key: str) -> str:
        low, high = summary.get(f"{key}_ci95") or (None, None)
        return f"  {label:<28}{pct(summary.get(key))}  95% CI [{pct(low)}, {pct(high)}]"

    lines = [f"[{summary.get('stage')}] {summary.get('questions_file')}: n={summary['n']} questions, "
             f"{summary['n_with_answer']} with an answer; {summary.get('evidence')}"]
    if summary["n_with_answer"]:
        lines += [line("execution accuracy (strict)", "execution_accuracy"), line("tolerant (published rounding)", "tolerant_accuracy"),
                  line(f"lenient ({_tolerance(summary)} tol.)", "lenient_accuracy")]
    lines.append(f"  no parseable answer         {pct(summary.get('no_answer_rate'))}")
    if summary.get("invalid_lines"):
        lines.append(f"  invalid lines: {summary['invalid_lines']} (not answered)")
        lines += [f"    line {bad['line']}{' (id ' + repr(bad['id']) + ')' if bad.get('id') else ''}: {bad['reason']}" for bad in summary.get("invalid", [])]
    lines.append(f"  records: {summary.get('records')}")
    return "\n".join(lines)


def format_question_comparison(table: Mapping[str, Any]) -> str:
    lines = [f"{table['questions_file']}: {table['shared_ids']} questions with an answer that both stages answered"]
    for rule, name in (("strict", "execution_accuracy"), ("tolerant", "tolerant_accuracy")):
        for row in table[rule]["stages"]:
            lines.append(f"  {rule:<9}{row['stage']:<10} {stats.percent(row[name])}")
        lines += [f"  {mcnemar_line(pair, rule)}" for pair in table[rule]["pairs"]]
    return "\n".join(lines)


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few human lines for the console; the JSON summary has everything."""
    pct = stats.percent
    strict_low, strict_high = summary.get("execution_accuracy_ci95") or (None, None)
    lenient_low, lenient_high = summary.get("lenient_accuracy_ci95") or (None, None)
    retriever = summary.get("retriever")
    mode = summary.get("evidence_mode") or "retrieved"
    if mode == "retrieved" and isinstance(retriever, Mapping):
        mode = f"retrieved ({retriever_labels.short_label(retriever)})"
    return "\n".join([
        f"[{summary.get('stage', 'eval')}] split {summary.get('split')}, {mode} evidence: n={summary['n']}",
        f"  execution accuracy (strict) {pct(summary['execution_accuracy'])}  95% CI [{pct(strict_low)}, {pct(strict_high)}]",
        f"  lenient accuracy ({_tolerance(summary)} tol.)  {pct(summary['lenient_accuracy'])}  95% CI [{pct(lenient_low)}, {pct(lenient_high)}]",
        f"  program accuracy            {pct(summary['program_accuracy'])}",
        f"  no parseable answer         {pct(summary['no_answer_rate'])}",
        f"  records: {summary.get('records')}",
    ])


def _tolerance(summary: Mapping[str, Any]) -> str:
    """The lenient check's tolerance as "1%" (summaries from before it was recorded used 1%)."""
    return f"{100 * float(summary.get('rel_tol', 0.01)):g}%"


# --- comparison and official output ---------------------------------------------------------------

def read_stage(where: Layout, stage: str) -> dict[str, dict[str, Any]]:
    return {str(r.get("id")): r for r in storage.read_jsonl(where.eval_records(stage))}


def compare_stages(where: Layout, stages: Sequence[str]) -> dict[str, Any]:
    """Accuracy of each stage that has results, on the ids they all share, with exact McNemar
    p-values for every pair (paired, so differences are judged on the same questions)."""
    present = {stage: read_stage(where, stage) for stage in stages}
    present = {stage: recs for stage, recs in present.items() if recs}
    shared = sorted(set.intersection(*(set(recs) for recs in present.values()))) if present else []
    table = stats.paired_table({stage: [bool(recs[i].get("strict")) for i in shared] for stage, recs in present.items()})
    for row in table["stages"]:
        row["lenient_accuracy"] = stats.rate(present[row["stage"]][i].get("lenient") for i in shared)
    return {"shared_ids": len(shared), **table}


def format_comparison(table: Mapping[str, Any]) -> str:
    rows = [(row["stage"], row["n"], stats.percent(row["execution_accuracy"]), stats.percent(row["lenient_accuracy"])) for row in table["stages"]]
    lines = [console.table(rows, ("stage", "n", "strict", "lenient"), title=f"stages compared on {table['shared_ids']} shared examples")]
    lines += [mcnemar_line(pair) for pair in table["pairs"]]
    return "\n".join(lines)


def mcnemar_line(pair: Mapping[str, Any], rule: str | None = None) -> str:
    """One pair of ``stats.paired_table`` as a console line; ``rule`` names the verdict paired
    where a comparison pairs several (strict, tolerant)."""
    p_value = "-" if pair["p_value"] is None else f"{pair['p_value']:.4f}"
    test = f"McNemar ({rule})" if rule else "McNemar"
    return (f"{test} {pair['a']} vs {pair['b']}: only {pair['a']} right {pair['a_only']}, "
            f"only {pair['b']} right {pair['b_only']}, exact p = {p_value}")


def official_tokens(program: str | None) -> list[str]:
    """FinQA's prediction tokens for an extracted program; ["EOF"] when there is none or it is malformed."""
    if not program or not program.strip():
        return [programs.EOF]
    tokens = programs.tokenize(program.strip())
    body = tokens[:-1]
    # every step is exactly "op(", arg1, arg2, ")"; anything else the official script cannot read
    if not body or len(body) % 4:
        return [programs.EOF]
    try:
        programs.split_steps(body)
    except programs.ProgramError:
        return [programs.EOF]
    return tokens


def write_official_predictions(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """FinQA's official prediction file: [{"id", "predicted": program tokens + "EOF"}]."""
    predictions = [{"id": record["id"], "predicted": official_tokens(record.get("program"))} for record in records]
    return storage.atomic_write_json(path, predictions)

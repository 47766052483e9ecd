"""Taking a trained model out of FinReason: a merged 16-bit folder, GGUF files, an Ollama Modelfile,
each verified by loading it back (08_export.py).

``merge`` loads a stage's weights as the evaluator does but unquantised in float32 (a LoRA
adapter is merged into its base with PEFT's ``merge_and_unload``; a fully fine-tuned model is
taken as it is), casts it to 16 bits and saves a standalone folder with the tokenizer, its chat
template, the system prompt FinReason trained with, ``training_summary.json`` (so the loader and
06_evaluate.py read it like any trained model folder) and a model card.

The GGUF files are written by llama.cpp's own converter (``convert_hf_to_gguf.py`` with its own
``gguf-py``), which ``finreason.llama_cpp_source`` fetches from the llama-cpp-python source
distribution on PyPI and caches, run as a subprocess. F16 and Q8_0 are the converter's own output
types, so no compiled quantizer is needed.

``verify`` answers the same dev questions greedily with the project's prompts and scorer through
every artefact: the trained weights themselves (the reference), the merged folder (transformers),
each GGUF through llama.cpp (llama-cpp-python's runtime) and through transformers' GGUF loader.
Every runtime gets the same prompt token ids (the project's tokenizer and chat template) and its
new tokens are decoded the same way, so a difference in an answer is a difference in the weights
or the arithmetic. Speed is generated tokens per wall second, one question at a time, prompt
processing included, on the cores this process may use.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from finreason import console, data, evaluation, generation, gguf_files, layout, llama_cpp_source, models, prompts, stats, storage, training
from finreason.errors import FinReasonError
from finreason.layout import TRAINED_BY, TRAINED_STAGES, Layout
from finreason.provenance import provenance
from finreason.training_record import TRAINING_SUMMARY, TrainingRecord

_LOG = logging.getLogger(__name__)

MERGED, F16, Q8_0 = "merged", "model-f16.gguf", "model-q8_0.gguf"
OUTTYPES = {F16: "f16", Q8_0: "q8_0"}
MODELFILE, EXPORT_JSON = "Modelfile", "export.json"
SYSTEM_PROMPT_FILE = "system_prompt.txt"
DTYPES = ("float16", "bfloat16")
# what a stage's prompts depend on: taken from the weights' own training config (see prompt_config)
PROMPT_KEYS = ("EVIDENCE_MODE", "RETRIEVER", "RETRIEVER_TOP_K", "PROMPT_TOKEN_BUDGET", "PROMPT_INSTRUCTIONS", "FEW_SHOT_EXAMPLE")
# the issue's acceptance targets: share of identical predicted values, strict accuracy drift
TARGETS = {
    MERGED: {"identical_answers": 1.0},
    F16: {"identical_answers": 0.95},
    Q8_0: {"identical_answers": 0.90, "strict_accuracy_points": 2.0},
}
CHATML = "<|im_start|>{role}\n{content}<|im_end|>\n"


class ExportError(FinReasonError):
    """The export cannot run as asked; the message says what to do."""


# --- which weights ---------------------------------------------------------------------------


def choose_weights(cfg: Any, stage: str | None = None, weights: str | os.PathLike | None = None) -> tuple[str, Path]:
    """(stage, weights folder): ``weights`` when given (its stage from its training summary),
    else ``stage``'s, else the best trained stage: the highest strict accuracy among stages whose
    evaluation summary was made with the weights now on disk, the later stage on a tie, and the
    latest trained stage when none is evaluated."""
    where = Layout.of(cfg)
    if weights:
        folder = Path(weights).expanduser()
        if layout.weights_kind(folder) is None:
            raise ExportError(f"--weights {weights}: not a LoRA adapter folder ({layout.ADAPTER_MARKER}) nor a model folder ({layout.MODEL_MARKER})")
        recorded = TrainingRecord.read(folder).stage
        return (stage or (recorded if recorded in TRAINED_STAGES else "sft")), folder
    if stage:
        found = where.weights(stage)
        if found is None:
            raise ExportError(f"no trained {stage.upper()} weights under {where.stage_dir(stage)}: run {TRAINED_BY[stage]} first, or pass --weights FOLDER")
        return stage, found
    trained = [(name, where.weights(name)) for name in TRAINED_STAGES if where.weights(name) is not None]
    if not trained:
        raise ExportError(f"no trained weights under {where.root} (sft/ or grpo/): run 04_train_sft.py first, or pass --weights FOLDER")
    scored = []
    for order, (name, folder) in enumerate(trained):
        summary = storage.read_json_object(where.eval_summary(name))
        made_with = (summary.get("provenance") or {}).get("weights_sha256")
        accuracy = summary.get("execution_accuracy")
        if isinstance(accuracy, (int, float)) and made_with == models.weights_fingerprint(folder):
            scored.append((accuracy, order, name, folder))
    if scored:
        _, _, name, folder = max(scored)
        return name, folder
    return trained[-1]


def prompt_config(cfg: Any, weights: Path, explicit: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
    """``cfg`` with the prompt settings the weights were trained with (their training summary's
    config), so the exported system prompt and the verification prompts are the trained ones;
    keys given on the command line (``explicit``) win. Returns (cfg, the keys changed)."""
    trained = (TrainingRecord.read(weights).provenance or {}).get("config") or {}
    changes = {key: trained[key] for key in PROMPT_KEYS if key in trained and key not in explicit and trained[key] != getattr(cfg, key)}
    if changes:
        _LOG.info("prompt settings from the weights' training: %s", ", ".join(f"{k}={v}" for k, v in changes.items()))
    return (cfg.replace(**changes) if changes else cfg), changes


def stage_evaluation(cfg: Any, stage: str, weights_sha256: str | None) -> dict[str, Any] | None:
    """The stage's evaluation summary in brief (as training.add_evaluation records it), when it
    was made with these very weights; else None."""
    summary = storage.read_json_object(Layout.of(cfg).eval_summary(stage))
    if not summary or (summary.get("provenance") or {}).get("weights_sha256") != weights_sha256:
        return None
    return training.evaluation_brief(summary)


def exported_from(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """What a model folder written by this module was exported from (its training summary's
    ``exported_from``), or None for any other model or name."""
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        return None
    return TrainingRecord.read(folder).exported_from


# --- merged 16-bit folder --------------------------------------------------------------------


def load_source(cfg: Any, weights: Path) -> Any:
    """The trained weights as the evaluator loads them, but unquantised and in float32: the
    reference the artefacts are compared with, and what is merged (a 4-bit base cannot be
    merged into exactly)."""
    return models.load_model(cfg.replace(LOAD_IN_4BIT=False, COMPUTE_DTYPE="float32"), weights=weights)


def merged_model(loaded: Any, dtype: str) -> Any:
    """The standalone model in ``dtype``: a PEFT model's adapter merged into its base weights."""
    import torch  # heavy: 08_export.py --help and the tests of the pure parts do without it

    model = loaded.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.to(getattr(torch, dtype))


def save_merged(model: Any, tokenizer: Any, folder: Path, system_prompt: str, summary: Mapping[str, Any],
                recorded_as: Path | None = None) -> Path:
    """Save the merged model, tokenizer (chat template included), system prompt and training
    summary into ``folder`` at once (a kill leaves the old folder or none); the summary names the
    folder as ``recorded_as`` (where a staged export will be), by default ``folder``."""
    recorded = str(recorded_as or folder)
    config = model.generation_config
    # greedy by default for whoever serves the folder (vLLM, transformers), as FinReason decodes
    config.do_sample = False
    for name in ("temperature", "top_p", "top_k"):
        setattr(config, name, None)
    with storage.atomic_folder(folder) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / SYSTEM_PROMPT_FILE).write_text(system_prompt + "\n", encoding="utf-8")
        storage.atomic_write_json(staging / TRAINING_SUMMARY, {**summary, "weights": recorded})
    # the hash of the folder's own tensors, so results made with it name exactly these weights
    storage.atomic_write_json(folder / TRAINING_SUMMARY,
                              {**summary, "weights": recorded, "weights_sha256": models.weights_fingerprint(folder)})
    return folder


# --- GGUF -------------------------------------------------------------------------------------


def convert_to_gguf(converter: Path, model_dir: Path, out: Path, outtype: str) -> dict[str, Any]:
    """Run llama.cpp's converter on ``model_dir`` into ``out`` (written beside it, checked, then
    renamed); returns the file's header facts (gguf_files.check_gguf)."""
    partial = out.with_name(f".{out.name}.partial")
    command = [sys.executable, str(converter / "convert_hf_to_gguf.py"), str(model_dir), "--outtype", outtype, "--outfile", str(partial)]
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py, not the installed gguf
    started = time.perf_counter()
    try:
        # in this process's group (Ctrl-C reaches it) and killed with this process, even by kill -9
        result = subprocess.run(console.dying_with_parent(command), capture_output=True, text=True, env=env)
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["no output"]
            raise ExportError(f"llama.cpp's converter failed on {model_dir} ({outtype}): {lines[-1]}")
        facts = gguf_files.check_gguf(partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    _LOG.info("wrote %s (%.1f MB, %.0f s)", out, out.stat().st_size / 1e6, time.perf_counter() - started)
    return {**facts, "seconds": round(time.perf_counter() - started, 1)}


# --- Ollama ----------------------------------------------------------------------------------


def renders_chatml(tokenizer: Any, system_prompt: str) -> bool:
    """True when the tokenizer's chat template renders a system + user turn exactly as ChatML
    (SmolLM2's and Qwen2.5's do), so Ollama's Go template below is the same prompt."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": "Question: what is 2 + 2?"}]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except (ValueError, TypeError):
        return False
    expected = "".join(CHATML.format(**message) for message in messages) + "<|im_start|>assistant\n"
    return rendered == expected


def modelfile_text(gguf_name: str, system_prompt: str, chatml: bool, max_new_tokens: int, context: int) -> str:
    """An Ollama Modelfile: the GGUF, FinReason's system prompt, greedy decoding, and (for
    ChatML models) the chat template; otherwise Ollama takes the template from the GGUF's metadata."""
    if '"""' in system_prompt:
        raise ExportError('the system prompt contains """, which an Ollama Modelfile cannot quote')
    lines = ["# FinReason export (08_export.py): ollama create finreason -f Modelfile", f"FROM ./{gguf_name}"]
    if chatml:
        lines += [
            'TEMPLATE """{{- if .System }}<|im_start|>system',
            "{{ .System }}<|im_end|>",
            "{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}",
            "{{ .Content }}<|im_end|>",
            '{{ end }}<|im_start|>assistant',
            '"""',
        ]
    lines += [
        f'SYSTEM """{system_prompt}"""',
        "PARAMETER temperature 0",
        "PARAMETER top_k 1",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_predict {max_new_tokens}",
        f"PARAMETER num_ctx {context}",
        'PARAMETER stop "<|im_end|>"',
    ]
    return "\n".join(lines) + "\n"


# --- verification ----------------------------------------------------------------------------


@dataclass
class Answers:
    """Greedy completions of one artefact for the verification questions, scored."""
    completions: list[str]
    predicted: list[Any]
    strict: list[bool]
    generated_tokens: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        return round(self.generated_tokens / self.seconds, 1) if self.seconds > 0 else None


def score(examples: Sequence[Any], completions: Sequence[str], tokenizer: Any, rel_tol: float, seconds: float,
          **extra: Any) -> Answers:
    """Score ``completions`` with the evaluator's own record scoring (scoring.score_completion)."""
    records = [evaluation.score_record(example, completion, rel_tol) for example, completion in zip(examples, completions)]
    generated = sum(len(tokenizer(completion, add_special_tokens=False)["input_ids"]) for completion in completions)
    return Answers(list(completions), [record["predicted"] for record in records], [record["strict"] for record in records],
                   generated, seconds, dict(extra))


def answer_transformers(loaded: Any, rendered: Sequence[str], max_new_tokens: int) -> tuple[list[str], float]:
    """Greedy completions through the project's generation loop, one question at a time."""
    started = time.perf_counter()
    completions = generation.generate(loaded, rendered, max_new_tokens, batch_size=1, progress=False)
    return completions, time.perf_counter() - started


def answer_llama_cpp(path: Path, token_lists: Sequence[Sequence[int]], stops: set[int], tokenizer: Any,
                     max_new_tokens: int, threads: int) -> tuple[list[str], float, dict[str, Any]]:
    """Greedy completions through llama.cpp (llama-cpp-python) from the same prompt token ids;
    also the share of prompts llama.cpp's own tokenizer turns into the same ids."""
    from llama_cpp import Llama  # optional (requirements-export.txt): only the verification needs it

    context = max(len(tokens) for tokens in token_lists) + max_new_tokens + 8
    llm = Llama(model_path=str(path), n_ctx=context, n_threads=threads, n_threads_batch=threads, seed=0, verbose=False)
    same_tokens = 0
    completions = []
    started = time.perf_counter()
    for tokens in token_lists:
        new: list[int] = []
        for token in llm.generate(list(tokens), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token in stops:
                break
            new.append(int(token))
            if len(new) >= max_new_tokens:
                break
        completions.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    seconds = time.perf_counter() - started
    for tokens in token_lists:
        text = tokenizer.decode(list(tokens), skip_special_tokens=False)
        same_tokens += llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == list(tokens)
    llm.close()
    return completions, seconds, {"llama_cpp_tokenizer_agrees": round(same_tokens / len(token_lists), 4)}


def load_gguf_transformers(path: Path, tokenizer: Any) -> Any:
    """A GGUF through transformers' own GGUF loader (dequantised to float32), in memory."""
    import torch  # heavy, as transformers: only the verification loads a GGUF this way
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    return models.LoadedModel(model=model, tokenizer=tokenizer, info={"model_path": str(path), "loader": "transformers-gguf"})


def compare(reference: Answers, answers: Answers) -> dict[str, Any]:
    n = len(reference.predicted)
    return {
        "n": n,
        "identical_answers": round(sum(a == b for a, b in zip(reference.predicted, answers.predicted)) / n, 4),
        "identical_completions": round(sum(a == b for a, b in zip(reference.completions, answers.completions)) / n, 4),
        "strict_accuracy": round(sum(answers.strict) / n, 4),
        "tokens_per_s": answers.tokens_per_s,
        "generated_tokens": answers.generated_tokens,
        **answers.extra,
    }


def check_target(artefact: str, row: Mapping[str, Any], reference_accuracy: float) -> tuple[bool, str]:
    """Whether ``row`` meets the issue's target for ``artefact``, and the target in words."""
    target = TARGETS[artefact]
    met = row["identical_answers"] >= target["identical_answers"]
    words = f"identical >= {target['identical_answers']:.0%}"
    if "strict_accuracy_points" in target:
        met = met and abs(row["strict_accuracy"] - reference_accuracy) * 100 <= target["strict_accuracy_points"] + 1e-9
        words += f", strict within {target['strict_accuracy_points']:g} points"
    return met, words


# --- the model card --------------------------------------------------------------------------


def model_card(summary: Mapping[str, Any], system_prompt: str, cfg: Any, table: str | None) -> str:
    """README.md of the merged folder: what produced it, how to prompt it, how it was verified."""
    source = summary.get("exported_from", {})
    evidence = prompts.evidence_label(summary.get("evidence_mode"), summary.get("retriever"))
    lines = [
        "---", "library_name: transformers", "tags: [finreason, finqa]", "---", "",
        f"# FinReason {str(source.get('stage', '')).upper()} model, merged ({source.get('dtype')})", "",
        "A standalone model folder written by FinReason's `08_export.py`: the trained weights "
        f"({source.get('weights_kind')} at `{source.get('weights')}`, sha256 `{str(source.get('weights_sha256'))[:16]}`) "
        f"{'merged into' if source.get('weights_kind') == layout.ADAPTER else 'fine-tuned from'} `{summary.get('base_model')}`.", "",
        "| | |", "|---|---|",
        f"| stage | {source.get('stage')} |",
        f"| evidence | {evidence} |",
        f"| results | {training.evaluation_text(summary.get('evaluation'))} |",
        f"| exported | {source.get('created')} by `{source.get('command')}` |", "",
        "## Prompt", "",
        "FinReason's prompt, through this folder's chat template: the system message below "
        f"(also in `{SYSTEM_PROMPT_FILE}`), then a user message with the evidence (table rows as "
        "`| a | b |` lines, then report sentences) and `Question: ...`. The answer is a FinQA program "
        "and its value (`Program: ...` / `Answer: ...`); decode greedily.", "",
        "```text", system_prompt, "```", "",
        f"Prompt settings: {', '.join(f'{key}={getattr(cfg, key)}' for key in PROMPT_KEYS)}.", "",
    ]
    if table:
        lines += ["## Verification", "", "```text", table, "```", ""]
    lines += ["Full provenance: `training_summary.json` (the training) and `../export.json` (the export).", ""]
    return "\n".join(lines)


# --- the whole export ------------------------------------------------------------------------


@dataclass
class ExportPlan:
    cfg: Any
    stage: str
    weights: Path
    out: Path
    verify: int = 20
    dtype: str = "float16"
    converter_cache: str = llama_cpp_source.CONVERTER_CACHE
    prompt_changes: dict[str, Any] = field(default_factory=dict)


def clean_leftovers(out: Path) -> list[Path]:
    """What a killed export left, removed (called under the output folder's lock, so no export is
    running): its staging folders beside ``out`` and, from older versions, ``.partial`` GGUFs in
    it; a kill between ``install_folder``'s two renames is undone first. Returns what went."""
    storage.recover_folder(out)
    gone = [path for path in out.parent.glob(f".{out.name}.*") if path != storage.replaced_path(out)]
    gone += list(out.glob(".*.partial")) if out.is_dir() else []
    for path in gone:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        _LOG.info("removed %s, left by an export that was killed", path)
    return gone


def run_export(plan: ExportPlan, progress: bool = True) -> dict[str, Any]:
    """Merge, convert, write the Modelfile, verify every artefact; write export.json. Returns it.

    Everything is written into one staging folder that replaces ``plan.out`` only at the end
    (``storage.atomic_folder``, as the training save): a killed export leaves the previous
    export whole, so export.json, the GGUFs, the Modelfile and merged/ always describe one export."""
    clean_leftovers(plan.out)
    with storage.atomic_folder(plan.out) as work:
        return _export_into(plan, work, progress)


@dataclass
class _Reference:
    """The verification's dev questions, their rendered prompts and the trained weights' answers."""

    examples: list[Any]
    rendered: list[str]
    answers: Answers


@dataclass
class _Artefacts:
    """The GGUFs' header facts by file name, and whether the Modelfile carries a ChatML template."""

    ggufs: dict[str, dict[str, Any]]
    chatml: bool


def _export_into(plan: ExportPlan, work: Path, progress: bool) -> dict[str, Any]:
    """``run_export``'s work, written into ``work``; every path it records is the final one under ``plan.out``."""
    _check_plan(plan)
    cfg = plan.cfg
    _make_deterministic(cfg.SEED)
    steps = ["reference", "merge", "convert", "verify"] if plan.verify else ["merge", "convert"]
    bar = tqdm(total=len(steps), desc="export", unit="step", disable=not progress, file=sys.stderr)
    system_prompt = prompts.system_prompt_from_cfg(cfg)
    try:
        converter = llama_cpp_source.converter_dir(plan.converter_cache)
        loaded = load_source(cfg, plan.weights)
        tokenizer = loaded.tokenizer
        reference = _answer_with_trained_weights(plan, loaded, bar) if plan.verify else None
        summary = _exported_summary(plan, loaded)
        merged_dir = _write_merged(plan, loaded, work, summary, system_prompt, bar)
        del loaded  # the float32 source is not needed again: free its memory before the conversions
        artefacts = _write_ggufs_and_modelfile(plan, converter, merged_dir, work, tokenizer, system_prompt, bar)
        rows: list[dict[str, Any]] = []
        if reference is not None:
            rows = verify(plan, reference.examples, reference.rendered, reference.answers, work, artefacts.ggufs, tokenizer, bar)
            bar.update()
    finally:
        bar.close()
    result = _export_record(plan, summary, system_prompt, artefacts, tokenizer, converter)
    if reference is not None:
        result["verification"] = _verification_record(plan, reference, rows)
        storage.atomic_write_text(merged_dir / "README.md", model_card(summary, system_prompt, cfg, format_table(result)))
    storage.atomic_write_json(work / EXPORT_JSON, result)
    return result


def _check_plan(plan: ExportPlan) -> None:
    """Refuse, before anything loads, what the export cannot do as asked."""
    if plan.dtype not in DTYPES:
        raise ExportError(f"--dtype {plan.dtype}: choose one of {', '.join(DTYPES)}")
    if plan.verify and not llama_cpp_source.llama_cpp_available():
        raise ExportError(f"verifying the GGUFs needs llama.cpp's runtime: {llama_cpp_source.INSTALL_HINT}; or pass --verify 0")
    storage.check_writable(plan.out / EXPORT_JSON)


def _make_deterministic(seed: int) -> None:
    import torch  # heavy: 08_export.py --help and the tests of the pure parts do without it

    torch.manual_seed(seed)
    generation.limit_threads()


def _answer_with_trained_weights(plan: ExportPlan, loaded: Any, bar: Any) -> _Reference:
    """The first ``plan.verify`` dev questions answered by the trained weights: what every artefact is compared with."""
    cfg = plan.cfg
    bundle = data.load_from_config(cfg, splits=("dev",), verbose=False)
    examples = data.first(bundle["dev"], plan.verify)
    rendered = [prompts.prompt_from_cfg(example, loaded.tokenizer, cfg) for example in examples]
    bar.set_postfix_str("trained weights")
    completions, seconds = answer_transformers(loaded, rendered, cfg.MAX_NEW_TOKENS)
    answers = score(examples, completions, loaded.tokenizer, cfg.LENIENT_REL_TOL, seconds)
    bar.update()
    return _Reference(examples, rendered, answers)


def _exported_summary(plan: ExportPlan, loaded: Any) -> dict[str, Any]:
    """The merged folder's training summary: the source's, marked as a standalone model with what
    it was exported from (and the stage's evaluation when it was made with these weights)."""
    cfg = plan.cfg
    source_summary = TrainingRecord.read(plan.weights).as_dict()
    if not source_summary.get("evaluation"):
        source_summary["evaluation"] = stage_evaluation(cfg, plan.stage, loaded.info.get("weights_sha256"))
    return {
        **{key: value for key, value in source_summary.items() if key not in ("steps", "provenance")},
        "stage": plan.stage,
        "weights_kind": layout.MODEL,
        "base_model": source_summary.get("base_model") or cfg.MODEL_NAME,
        "evidence_mode": cfg.EVIDENCE_MODE,
        "exported_from": {
            "stage": plan.stage, "weights": str(plan.weights), "weights_kind": loaded.info.get("weights_kind"),
            "weights_sha256": loaded.info.get("weights_sha256"), "dtype": plan.dtype,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
        "provenance": source_summary.get("provenance"),
    }


def _write_merged(plan: ExportPlan, loaded: Any, work: Path, summary: Mapping[str, Any], system_prompt: str, bar: Any) -> Path:
    """The merged 16-bit folder with its model card (the verification table is added once measured)."""
    bar.set_postfix_str("merge")
    merged_dir = save_merged(merged_model(loaded, plan.dtype), loaded.tokenizer, work / MERGED, system_prompt, summary, plan.out / MERGED)
    storage.atomic_write_text(merged_dir / "README.md", model_card(summary, system_prompt, plan.cfg, None))
    bar.update()
    return merged_dir


def _write_ggufs_and_modelfile(plan: ExportPlan, converter: Path, merged_dir: Path, work: Path, tokenizer: Any,
                               system_prompt: str, bar: Any) -> _Artefacts:
    """Both GGUFs from the merged folder, and the Ollama Modelfile for the Q8_0 one."""
    bar.set_postfix_str("GGUF")
    ggufs = {name: convert_to_gguf(converter, merged_dir, work / name, outtype) for name, outtype in OUTTYPES.items()}
    chatml = renders_chatml(tokenizer, system_prompt)
    if not chatml:
        _LOG.warning("the chat template is not ChatML: the Modelfile leaves TEMPLATE to Ollama's reading of the GGUF metadata")
    storage.atomic_write_text(work / MODELFILE, modelfile_text(Q8_0, system_prompt, chatml, plan.cfg.MAX_NEW_TOKENS, plan.cfg.MAX_SEQ_LEN))
    bar.update()
    return _Artefacts(ggufs, chatml)


def _export_record(plan: ExportPlan, summary: Mapping[str, Any], system_prompt: str, artefacts: _Artefacts, tokenizer: Any,
                  converter: Path) -> dict[str, Any]:
    """export.json without its verification: the source, the prompt settings, every artefact and the converter."""
    cfg, out = plan.cfg, plan.out
    return {
        "source": {"stage": plan.stage, "weights": str(plan.weights), **summary["exported_from"]},
        "evidence_mode": cfg.EVIDENCE_MODE,
        "prompt_settings": {key: getattr(cfg, key) for key in PROMPT_KEYS},
        "prompt_settings_from_training": plan.prompt_changes,
        "system_prompt": system_prompt,
        "modelfile": {"path": str(out / MODELFILE), "gguf": Q8_0, "chatml_template": artefacts.chatml},
        "gguf": {name: {key: value for key, value in facts.items() if key != "chat_template"}
                 | {"chat_template_kept": facts.get("chat_template") == tokenizer.chat_template} for name, facts in artefacts.ggufs.items()},
        "converter": llama_cpp_source.converter_record(converter),
        "verification": None,
        "provenance": provenance(cfg, model=cfg.MODEL_NAME, weights=str(plan.weights)),
    }


def _verification_record(plan: ExportPlan, reference: _Reference, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """export.json's ``verification``: how the questions were answered, the reference and one row per (artefact, runtime)."""
    cfg, answers = plan.cfg, reference.answers
    return {
        "n": len(reference.examples), "split": "dev", "max_new_tokens": cfg.MAX_NEW_TOKENS,
        "decoding": "greedy; the same prompt token ids for every runtime",
        "tokens_per_s": "generated tokens / wall seconds, one question at a time, prompt processing included",
        "threads": generation.available_cores(), "llama_cpp_python": llama_cpp_source.llama_cpp_build(),
        "reference": {"weights": str(plan.weights), "loaded_as": "float32, unquantised",
                      "strict_accuracy": round(sum(answers.strict) / len(reference.examples), 4),
                      "tokens_per_s": answers.tokens_per_s, "generated_tokens": answers.generated_tokens},
        "artefacts": rows,
        "all_targets_met": all(row["target_met"] for row in rows if "target_met" in row),
    }


def verify(plan: ExportPlan, examples: Sequence[Any], rendered: Sequence[str], reference: Answers, work: Path,
           ggufs: Mapping[str, Any], tokenizer: Any, bar: Any) -> list[dict[str, Any]]:
    """One row per (artefact, runtime): the merged folder through transformers (as 06 loads it),
    each GGUF through llama.cpp (the target) and transformers' GGUF loader (a second check).
    The artefacts are read from ``work`` (the staged export) and named by their final paths."""
    merged_dir = work / MERGED
    cfg = plan.cfg
    rel_tol, max_new = cfg.LENIENT_REL_TOL, cfg.MAX_NEW_TOKENS
    reference_accuracy = sum(reference.strict) / len(examples)
    rows = []

    def add(artefact: str, path: Path, runtime: str, answers: Answers, targeted: bool) -> None:
        row = {"artefact": artefact, "runtime": runtime, "path": str(plan.out / path.relative_to(work)),
               "bytes": sum(p.stat().st_size for p in path.glob("*.safetensors")) if path.is_dir() else path.stat().st_size,
               **compare(reference, answers)}
        if targeted:
            row["target_met"], row["target"] = check_target(artefact, row, reference_accuracy)
        rows.append(row)

    bar.set_postfix_str("merged")
    merged = models.load_model(cfg.replace(LOAD_IN_4BIT=False, COMPUTE_DTYPE="float32"), weights=merged_dir)
    completions, seconds = answer_transformers(merged, rendered, max_new)
    add(MERGED, merged_dir, "transformers", score(examples, completions, tokenizer, rel_tol, seconds), True)
    stops = set(generation.stop_token_ids(tokenizer, merged.model))
    del merged
    token_lists = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
    for name in ggufs:
        path = work / name
        bar.set_postfix_str(f"{name} llama.cpp")
        completions, seconds, extra = answer_llama_cpp(path, token_lists, stops, tokenizer, max_new, generation.available_cores())
        add(name, path, "llama.cpp", score(examples, completions, tokenizer, rel_tol, seconds, **extra), True)
        bar.set_postfix_str(f"{name} transformers")
        loaded = load_gguf_transformers(path, tokenizer)
        completions, seconds = answer_transformers(loaded, rendered, max_new)
        add(name, path, "transformers-gguf", score(examples, completions, tokenizer, rel_tol, seconds), False)
        del loaded
    return rows


def format_table(result: Mapping[str, Any]) -> str:
    """The verification table (artefact, runtime, size, identical share, strict accuracy, tokens/s)."""
    verification = result.get("verification")
    if not verification:
        return "not verified (--verify 0)"
    reference = verification["reference"]
    cells = [("trained weights", "transformers (float32)", "", "", stats.percent(reference["strict_accuracy"]), reference["tokens_per_s"], "reference")]
    for row in verification["artefacts"]:
        target = ("met" if row["target_met"] else "MISSED") if "target_met" in row else "second check"
        cells.append((row["artefact"], row["runtime"], f"{row['bytes'] / 2**20:.0f} MiB", stats.percent(row["identical_answers"]),
                      stats.percent(row["strict_accuracy"]), row["tokens_per_s"], target))
    return console.table(cells, ("artefact", "runtime", "size", "identical", "strict", "tokens/s", "target"),
                         title=f"{verification['n']} dev questions, greedy, {verification['threads']} CPU threads",
                         left={"artefact", "runtime", "target"})


def missed(result: Mapping[str, Any]) -> list[str]:
    """The artefacts that missed their target, in words (empty when all met or not verified)."""
    verification = result.get("verification") or {}
    return [f"{row['artefact']} ({row['runtime']}): {row['identical_answers']:.0%} identical, {row['strict_accuracy']:.0%} strict; target {row['target']}"
            for row in verification.get("artefacts", []) if row.get("target_met") is False]

"""Batched, resumable evaluation shared by every stage (zero-shot, SFT, GRPO) and the app.

``generate`` is greedy decoding with a KV cache in our own loop: prompts sorted by length so a
batch carries little padding, left-padded, and rows that reached end of turn leave the batch at
once, so the remaining rows decode faster. Greedy answers match one-at-a-time ``model.generate``
(checked in benchmarks/batched_generation.py and the tests).

``evaluate`` builds the SAME prompt for every stage (``prompts.prompt_from_cfg``), scores with
``scoring.score_completion`` only, and appends one JSONL record per example as each batch
finishes: a killed run resumes where it stopped, never duplicating an id. Records from a
different run (other model, adapter, split or prompt settings) are moved to ``eval/archive/``
instead of being mixed in.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import records as records_module

RECORD_FIELDS = (
    "id", "split", "run", "prompt_tokens", "completion_tokens", "completion", "program", "answer_text",
    "predicted", "gold", "strict", "lenient", "program_correct", "source", "error", "evidence_source",
    "operations", "num_steps",
)


def log(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


# --- generation -----------------------------------------------------------------------------------

def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _limit_threads() -> None:
    """More torch threads than usable cores makes CPU decoding slower, not faster."""
    import torch

    cores = available_cores()
    if torch.get_num_threads() > cores:
        log(f"torch used {torch.get_num_threads()} threads on {cores} usable cores; using {cores}")
        torch.set_num_threads(cores)


def _decode_rows(tokenizer: Any, rows: Sequence[Sequence[int]], stops: set[int]) -> list[str]:
    texts = []
    for row in rows:
        cut = [token for token in row if token not in stops]
        texts.append(tokenizer.decode(cut, skip_special_tokens=True).strip())
    return texts


def _cache_argument(model: Any) -> str:
    """transformers 5.2x renamed the forward's ``past_key_values`` to ``cache``; accept both."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


# Below this many shared tokens a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 32


def _shared_prefix_length(token_lists: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    shortest = min(len(tokens) for tokens in token_lists)
    length = 0
    first = token_lists[0]
    while length < shortest - 1 and all(tokens[length] == first[length] for tokens in token_lists):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


def _generate_batch(model: Any, token_lists: list[list[int]], pad_id: int, stops: set[int], max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding of one left-padded batch; finished rows are dropped from the KV cache."""
    import torch
    from transformers import DynamicCache

    device = model.device
    cache_argument = _cache_argument(model)
    # one cache object for the whole batch: rows are dropped from it in place
    cache = DynamicCache(config=model.config)
    # Every prompt starts with the same system prompt and worked example (~300 tokens): run that
    # shared prefix once and copy its keys/values to every row instead of recomputing it per row.
    prefix = _shared_prefix_length(token_lists)
    prefix_mask = torch.ones((len(token_lists), prefix), dtype=torch.long, device=device)
    if prefix:
        model(
            input_ids=torch.tensor([token_lists[0][:prefix]], dtype=torch.long, device=device),
            position_ids=torch.arange(prefix, device=device)[None, :],
            use_cache=True, logits_to_keep=1, **{cache_argument: cache},
        )
        cache.batch_repeat_interleave(len(token_lists))
    suffixes = [tokens[prefix:] for tokens in token_lists]
    width = max(len(tokens) for tokens in suffixes)
    input_ids = torch.full((len(suffixes), width), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    for row, tokens in enumerate(suffixes):
        input_ids[row, width - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
        suffix_mask[row, width - len(tokens):] = 1
    input_ids, suffix_mask = input_ids.to(device), suffix_mask.to(device)
    # the left padding sits between the shared prefix and each row's own tokens: masked out, and
    # positions continue from the prefix as if it were not there
    positions = (prefix + suffix_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([prefix_mask, suffix_mask], dim=-1)
    out = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
        **{cache_argument: cache},
    )
    next_tokens = out.logits[:, -1, :].argmax(-1)
    last_position = positions[:, -1]
    generated: list[list[int]] = [[] for _ in token_lists]
    active = list(range(len(token_lists)))  # original row of each live batch row
    stop_tensor = torch.tensor(sorted(stops), device=device)
    for step in range(max_new_tokens):
        chosen = next_tokens.tolist()
        for row, token in zip(active, chosen):
            generated[row].append(token)
        if step + 1 == max_new_tokens:
            break
        finished = torch.isin(next_tokens, stop_tensor)
        if bool(finished.any()):
            keep = (~finished).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            active = [active[index] for index in keep.tolist()]
            next_tokens, mask, last_position = next_tokens[keep], mask[keep], last_position[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last_position = last_position + 1
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=mask,
            position_ids=last_position[:, None],
            use_cache=True,
            logits_to_keep=1,
            **{cache_argument: cache},
        )
        next_tokens = out.logits[:, -1, :].argmax(-1)
    return generated


def generate(loaded: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int, progress: bool = True) -> list[str]:
    """Greedy completions (new tokens only, up to end of turn) for rendered chat prompts, in order."""
    import torch
    from tqdm.auto import tqdm

    from finreason.models import stop_token_ids

    if not prompts:
        return []
    model, tokenizer = loaded.model, loaded.tokenizer
    _limit_threads()
    stops = set(stop_token_ids(tokenizer, model))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    # the chat template already wrote every special token the model expects
    token_lists = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda index: -len(token_lists[index]))
    results: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, file=sys.stderr)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), max(1, batch_size)):
                chunk = order[start:start + max(1, batch_size)]
                rows = _generate_batch(model, [token_lists[index] for index in chunk], pad_id, stops, max_new_tokens)
                for index, text in zip(chunk, _decode_rows(tokenizer, rows, stops)):
                    results[index] = text
                bar.update(len(chunk))
    finally:
        bar.close()
        if was_training:
            model.train()
    return [text or "" for text in results]


def generate_one_at_a_time(loaded: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Reference: ``model.generate`` on each prompt alone (no padding); what ``generate`` must match."""
    import torch

    from finreason.models import stop_token_ids

    model, tokenizer = loaded.model, loaded.tokenizer
    stops = stop_token_ids(tokenizer, model)
    texts = []
    model.eval()
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts.append(_decode_rows(tokenizer, [out[0, ids.shape[1]:].tolist()], set(stops))[0])
    return texts


def vllm_usable(cfg: Mapping[str, Any]) -> bool:
    """vLLM only when asked for, installed, and a GPU is present; never an error otherwise."""
    if not cfg["USE_VLLM"]:
        return False
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def generate_vllm(loaded: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy generation through vLLM (GPU): base weights from ``model_path`` plus the adapter."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from finreason.models import stop_token_ids

    adapter = loaded.info.get("adapter")
    engine = LLM(model=loaded.info["model_path"], enable_lora=bool(adapter), trust_remote_code=False)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop_token_ids(loaded.tokenizer))
    lora = LoRARequest("adapter", 1, adapter) if adapter else None
    outputs = engine.generate(list(prompts), params, lora_request=lora)
    return [output.outputs[0].text.strip() for output in outputs]


# --- statistics -----------------------------------------------------------------------------------

def bootstrap_ci(values: Sequence[bool | float], samples: int, seed: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; (None, None) for no values."""
    import numpy as np

    if len(values) == 0:
        return None, None
    data = np.asarray(values, dtype=float)
    if samples <= 0:
        mean = float(data.mean())
        return mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value (binomial test on the discordant pairs)."""
    if len(a) != len(b):
        raise ValueError(f"mcnemar needs paired results, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2.0 ** discordant
    return min(1.0, 2.0 * tail)


def _rate(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    return sum(1 for r in records if r.get(key)) / len(records) if records else None


def _group(records: Sequence[Mapping[str, Any]], keys_of) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        for key in keys_of(record):
            groups[str(key)].append(record)
    return {
        key: {"n": len(group), "strict": _rate(group, "strict"), "lenient": _rate(group, "lenient")}
        for key, group in sorted(groups.items())
    }


def summarize(records: Sequence[Mapping[str, Any]], bootstrap_samples: int = 1000, seed: int = 42) -> dict[str, Any]:
    """Accuracy with 95% bootstrap CIs and breakdowns; program accuracy is None when no
    completion contains a program (free-text answers)."""
    strict = [bool(r.get("strict")) for r in records]
    lenient = [bool(r.get("lenient")) for r in records]
    has_program = any(r.get("program") for r in records)
    program = [bool(r.get("program_correct")) for r in records]
    strict_ci = bootstrap_ci(strict, bootstrap_samples, seed)
    lenient_ci = bootstrap_ci(lenient, bootstrap_samples, seed)
    return {
        "n": len(records),
        "execution_accuracy": _rate(records, "strict"),
        "execution_accuracy_ci95": list(strict_ci),
        "lenient_accuracy": _rate(records, "lenient"),
        "lenient_accuracy_ci95": list(lenient_ci),
        "program_accuracy": (sum(program) / len(program)) if has_program and program else None,
        "no_answer_rate": (sum(1 for r in records if r.get("source") == "none") / len(records)) if records else None,
        "answer_source": {key: sum(1 for r in records if r.get("source") == key) for key in ("program", "answer", "none")},
        "by_operation": _group(records, lambda r: sorted(set(r.get("operations") or [])) or ["none"]),
        "by_num_steps": _group(records, lambda r: [r.get("num_steps")]),
        "by_evidence_source": _group(records, lambda r: [r.get("evidence_source")]),
        "bootstrap_samples": bootstrap_samples,
    }


# --- evaluation -----------------------------------------------------------------------------------

def run_fingerprint(loaded: Any, cfg: Mapping[str, Any], split: str | None) -> str:
    """Everything that changes a completion; records of another run are never reused."""
    from finreason import prompts

    parts = {
        "model_path": loaded.info.get("model_path"),
        "adapter_sha256": loaded.info.get("adapter_sha256"),
        "quantization": loaded.info.get("quantization"),
        "dtype": loaded.info.get("dtype"),
        "split": split,
        "budget": cfg["PROMPT_TOKEN_BUDGET"],
        "few_shot": cfg["FEW_SHOT_EXAMPLE"],
        "max_new_tokens": cfg["MAX_NEW_TOKENS"],
        "system_prompt": hashlib.sha256(prompts.system_prompt(cfg["FEW_SHOT_EXAMPLE"]).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_resumable(path: Path, run: str) -> dict[str, dict[str, Any]]:
    """Records already written by this run, by id; a torn last line is repaired, another run's
    file is archived so its results are neither lost nor mixed in."""
    if not path.exists():
        return {}
    records_module.repair_jsonl(path)
    existing = list(records_module.read_jsonl(path))
    if any(record.get("run") != run for record in existing):
        archive = path.parent / "archive" / f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, archive)
        log(f"{path} came from a different run (model, adapter, split or prompt settings); moved to {archive}")
        return {}
    done: dict[str, dict[str, Any]] = {}
    for record in existing:
        done.setdefault(str(record.get("id")), record)
    if len(done) != len(existing):
        records_module.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in done.values()))
    return done


def score_record(example: Any, completion: str, rel_tol: float) -> dict[str, Any]:
    """Score one completion (scoring.score_completion, the one check) into a record's fields."""
    from finreason import programs, scoring

    verdict = scoring.score_completion(completion, example.exe_ans, example.table, rel_tol=rel_tol)
    program_correct = None
    if verdict.program:
        try:
            program_correct = bool(programs.equal_program(programs.tokenize(example.program), programs.tokenize(verdict.program)))
        except (programs.ProgramError, ArithmeticError, TypeError, ValueError, RecursionError):
            program_correct = False
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
        "source": verdict.source,
        "error": verdict.error,
        "evidence_source": example.evidence_source,
        "operations": example.operations,
        "num_steps": example.num_steps,
    }


def evaluate(
    loaded: Any,
    examples: Sequence[Any],
    cfg: Mapping[str, Any],
    stage: str,
    out_dir: str | os.PathLike,
    *,
    split: str | None = None,
    data: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``examples``; write <out_dir>/eval/<stage>.jsonl (resumable) and .summary.json."""
    from tqdm.auto import tqdm

    from finreason import prompts

    started = time.time()
    eval_dir = Path(out_dir) / "eval"
    path = eval_dir / f"{stage}.jsonl"
    run = run_fingerprint(loaded, cfg, split)
    done = load_resumable(path, run)
    unique = list({example.id: example for example in examples}.values())
    todo = [example for example in unique if example.id not in done]
    if done:
        log(f"resuming {path}: {len(unique) - len(todo)} of {len(unique)} examples already done")
    tokenizer = loaded.tokenizer
    rendered = [prompts.prompt_from_cfg(example, tokenizer, cfg) for example in todo]
    lengths = [len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) for prompt in rendered]
    # longest first: similar lengths share a batch (little padding) and memory trouble shows at once
    order = sorted(range(len(todo)), key=lambda index: -lengths[index])
    batch_size = max(1, int(cfg["EVAL_BATCH_SIZE"]))
    use_vllm = bool(todo) and vllm_usable(cfg)
    generation_s = 0.0
    bar = tqdm(total=len(todo), desc=f"eval {stage}", unit="ex", disable=not progress, file=sys.stderr)
    try:
        step = len(order) if use_vllm else batch_size
        for start in range(0, len(order), step):
            chunk = order[start:start + step]
            tick = time.time()
            chunk_prompts = [rendered[index] for index in chunk]
            if use_vllm:
                completions = generate_vllm(loaded, chunk_prompts, cfg["MAX_NEW_TOKENS"])
            else:
                completions = generate(loaded, chunk_prompts, cfg["MAX_NEW_TOKENS"], batch_size, progress=False)
            generation_s += time.time() - tick
            batch = []
            for index, completion in zip(chunk, completions):
                record = score_record(todo[index], completion, cfg["LENIENT_REL_TOL"])
                record.update(
                    split=split,
                    run=run,
                    prompt_tokens=lengths[index],
                    completion_tokens=len(tokenizer(completion, add_special_tokens=False)["input_ids"]),
                )
                batch.append({key: record.get(key) for key in RECORD_FIELDS})
            records_module.append_jsonl(path, batch)
            for record in batch:
                done[record["id"]] = record
            bar.update(len(chunk))
    finally:
        bar.close()
    final = [done[example.id] for example in unique]
    summary = summarize(final, cfg["BOOTSTRAP_SAMPLES"], cfg["SEED"])
    summary.update(
        stage=stage,
        split=split,
        run=run,
        records=str(path),
        generated_this_run=len(todo),
        generation_seconds=round(generation_s, 2),
        wall_seconds=round(time.time() - started, 2),
        generator="vllm" if use_vllm else "transformers-batched",
        provenance=records_module.provenance(
            cfg,
            data=dict(data) if data else None,
            model=loaded.info.get("base_model"),
            adapter=loaded.info.get("adapter"),
            loader=loaded.info.get("loader"),
            model_info=loaded.info,
            split=split,
        ),
    )
    records_module.atomic_write_json(eval_dir / f"{stage}.summary.json", summary)
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few human lines for the console; the JSON summary has everything."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    strict_low, strict_high = summary.get("execution_accuracy_ci95") or (None, None)
    lenient_low, lenient_high = summary.get("lenient_accuracy_ci95") or (None, None)
    return "\n".join([
        f"[{summary.get('stage', 'eval')}] split {summary.get('split')}: n={summary['n']}",
        f"  execution accuracy (strict) {pct(summary['execution_accuracy'])}  95% CI [{pct(strict_low)}, {pct(strict_high)}]",
        f"  lenient accuracy (1% tol.)  {pct(summary['lenient_accuracy'])}  95% CI [{pct(lenient_low)}, {pct(lenient_high)}]",
        f"  program accuracy            {pct(summary['program_accuracy'])}",
        f"  no parseable answer         {pct(summary['no_answer_rate'])}",
        f"  records: {summary.get('records')}",
    ])


# --- comparison and official output ---------------------------------------------------------------

def read_stage(out_dir: str | os.PathLike, stage: str) -> dict[str, dict[str, Any]]:
    path = Path(out_dir) / "eval" / f"{stage}.jsonl"
    return {str(r.get("id")): r for r in records_module.read_jsonl(path)}


def compare_stages(out_dir: str | os.PathLike, stages: Sequence[str]) -> dict[str, Any]:
    """Accuracy of each stage that has results, on the ids they all share, with exact McNemar
    p-values for every pair (paired, so differences are judged on the same questions)."""
    present = {stage: read_stage(out_dir, stage) for stage in stages}
    present = {stage: recs for stage, recs in present.items() if recs}
    shared = sorted(set.intersection(*(set(recs) for recs in present.values()))) if present else []
    rows = []
    for stage, recs in present.items():
        strict = [bool(recs[i].get("strict")) for i in shared]
        lenient = [bool(recs[i].get("lenient")) for i in shared]
        rows.append({
            "stage": stage,
            "n": len(shared),
            "execution_accuracy": sum(strict) / len(shared) if shared else None,
            "lenient_accuracy": sum(lenient) / len(shared) if shared else None,
        })
    pairs = []
    names = list(present)
    for left_index, left in enumerate(names):
        for right in names[left_index + 1:]:
            a = [bool(present[left][i].get("strict")) for i in shared]
            b = [bool(present[right][i].get("strict")) for i in shared]
            pairs.append({
                "a": left,
                "b": right,
                "a_only": sum(1 for x, y in zip(a, b) if x and not y),
                "b_only": sum(1 for x, y in zip(a, b) if y and not x),
                "p_value": mcnemar(a, b) if shared else None,
            })
    return {"shared_ids": len(shared), "stages": rows, "pairs": pairs}


def format_comparison(table: Mapping[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "   -  " if value is None else f"{100 * value:5.1f}%"

    lines = [f"stages compared on {table['shared_ids']} shared examples", f"{'stage':<10} {'n':>5} {'strict':>7} {'lenient':>8}"]
    for row in table["stages"]:
        lines.append(f"{row['stage']:<10} {row['n']:>5} {pct(row['execution_accuracy']):>7} {pct(row['lenient_accuracy']):>8}")
    for pair in table["pairs"]:
        p_value = "-" if pair["p_value"] is None else f"{pair['p_value']:.4f}"
        lines.append(
            f"McNemar {pair['a']} vs {pair['b']}: only {pair['a']} right {pair['a_only']}, "
            f"only {pair['b']} right {pair['b_only']}, exact p = {p_value}"
        )
    return "\n".join(lines)


def official_tokens(program: str | None) -> list[str]:
    """FinQA's prediction tokens for an extracted program; ["EOF"] when there is none or it is malformed."""
    from finreason import programs

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
    return records_module.atomic_write_json(path, predictions)

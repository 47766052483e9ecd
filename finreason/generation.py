"""Text generation for evaluation, the difficulty filter, pass@k and the app.

``generate`` is greedy decoding through transformers' batched ``model.generate`` (prompts sorted
by length so a batch carries little padding, left-padded); its answers match one prompt at a time
(``generate_one_at_a_time``; checked in the tests and benchmarks/batched_generation.py). ``sample``
draws several completions per prompt at a temperature through a KV-cache loop of our own
(``_sample_batch``): the system prompt every prompt shares runs once per batch, each prompt is
prefilled once however many samples it gets, and rows that reached end of turn leave the batch at
once. The library copies a prompt per sample before its prefill and decodes finished rows to the
end: on the cpu profile ``sample`` took half the library's time, where greedy decoding by hand
gained nothing (README, "batched generation"). vLLM (GPU only, opt-in) is here too.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_LOG = logging.getLogger(__name__)

# Below this many shared tokens a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 32


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def limit_threads() -> None:
    """More torch threads than usable cores makes CPU work slower, not faster."""
    import torch

    cores = available_cores()
    if torch.get_num_threads() > cores:
        _LOG.info("torch used %d threads on %d usable cores; using %d", torch.get_num_threads(), cores, cores)
        torch.set_num_threads(cores)


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """End-of-turn ids: eos, <|im_end|>, and whatever the model's generation config lists."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, (list, tuple)):
        ids.update(int(token) for token in configured)
    return sorted(ids)


def _pad_id(tokenizer: Any, stops: Iterable[int]) -> int:
    """The tokenizer's pad token, else a stop token: padding is masked out either way."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)


def _decode_rows(tokenizer: Any, rows: Sequence[Sequence[int]], stops: set[int]) -> list[str]:
    return [tokenizer.decode([token for token in row if token not in stops], skip_special_tokens=True).strip() for row in rows]


def _cache_argument(model: Any) -> str:
    """transformers 5.2x renamed the forward's ``past_key_values`` to ``cache``; accept both."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _shared_prefix_length(token_lists: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    shortest = min(len(tokens) for tokens in token_lists)
    length = 0
    first = token_lists[0]
    while length < shortest - 1 and all(tokens[length] == first[length] for tokens in token_lists):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


def _left_padded(token_lists: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input ids, attention mask) of the rows padded on the left to the longest."""
    import torch

    width = max(len(tokens) for tokens in token_lists)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        input_ids[row, width - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
        mask[row, width - len(tokens):] = 1
    return input_ids, mask


def _sample_batch(
    model: Any,
    token_lists: list[list[int]],
    pad_id: int,
    stops: set[int],
    max_new_tokens: int,
    repeats: int,
    temperature: float,
    generator: Any,
) -> list[list[int]]:
    """New tokens for one left-padded batch, ``repeats`` sampled rows per prompt (prompt-major
    order); finished rows leave the KV cache at once."""
    import torch
    from transformers import DynamicCache

    device = model.device
    cache_argument = _cache_argument(model)
    cache = DynamicCache(config=model.config)  # rows are dropped from it in place

    def pick(logits: Any) -> Any:
        probabilities = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)

    # Every prompt starts with the same system prompt: run that shared prefix once and copy its
    # keys/values to every row instead of recomputing it per row.
    prefix = _shared_prefix_length(token_lists)
    prefix_mask = torch.ones((len(token_lists), prefix), dtype=torch.long, device=device)
    if prefix:
        model(
            input_ids=torch.tensor([token_lists[0][:prefix]], dtype=torch.long, device=device),
            position_ids=torch.arange(prefix, device=device)[None, :],
            use_cache=True, logits_to_keep=1, **{cache_argument: cache},
        )
        cache.batch_repeat_interleave(len(token_lists))
    input_ids, suffix_mask = _left_padded([tokens[prefix:] for tokens in token_lists], pad_id)
    input_ids, suffix_mask = input_ids.to(device), suffix_mask.to(device)
    # the left padding sits between the shared prefix and each row's own tokens: masked out, and
    # positions continue from the prefix as if it were not there
    positions = (prefix + suffix_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([prefix_mask, suffix_mask], dim=-1)
    out = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
        **{cache_argument: cache},
    )
    # each prompt was prefilled once; its samples share that prefill
    cache.batch_repeat_interleave(repeats)
    logits = out.logits[:, -1, :].repeat_interleave(repeats, 0)
    mask = mask.repeat_interleave(repeats, 0)
    last_position = positions[:, -1].repeat_interleave(repeats, 0)
    next_tokens = pick(logits)
    rows = len(token_lists) * repeats
    generated: list[list[int]] = [[] for _ in range(rows)]
    active = list(range(rows))  # original row of each live batch row
    stop_tensor = torch.tensor(sorted(stops), device=device)
    for step in range(max_new_tokens):
        for row, token in zip(active, next_tokens.tolist()):
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
            input_ids=next_tokens[:, None], attention_mask=mask, position_ids=last_position[:, None],
            use_cache=True, logits_to_keep=1, **{cache_argument: cache},
        )
        next_tokens = pick(out.logits[:, -1, :])
    return generated


def _tokenized(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    # the chat template already wrote every special token the model expects
    return [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]


def _longest_first(token_lists: Sequence[Sequence[int]]) -> list[int]:
    """Prompt indices longest first, so each batch holds prompts of similar length: little padding."""
    return sorted(range(len(token_lists)), key=lambda index: -len(token_lists[index]))


def _in_batches(loaded: Any, prompts: Sequence[str], per_batch: int, label: str, progress: bool,
                decode_batch: Callable[[list[list[int]], list[int], int, int], list[Any]]) -> list[Any]:
    """One result per prompt, in prompt order: the prompts tokenized and run longest first in
    batches of ``per_batch`` (prompts of similar length: little padding) through
    ``decode_batch(token lists, stop ids, pad id, batch start)``, which returns one result per
    prompt of its batch; in inference mode, the model's training mode restored afterwards."""
    import torch
    from tqdm.auto import tqdm

    if not prompts:
        return []
    model, tokenizer = loaded.model, loaded.tokenizer
    limit_threads()
    stops = stop_token_ids(tokenizer, model)
    pad_id = _pad_id(tokenizer, stops)
    token_lists = _tokenized(tokenizer, prompts)
    order = _longest_first(token_lists)
    results: list[Any] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc=label, unit="prompt", disable=not progress, file=sys.stderr)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), per_batch):
                chunk = order[start:start + per_batch]
                for index, result in zip(chunk, decode_batch([token_lists[index] for index in chunk], stops, pad_id, start)):
                    results[index] = result
                bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return results


def generate(loaded: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int, progress: bool = True) -> list[str]:
    """Greedy completions (new tokens only, up to end of turn) for rendered chat prompts, in order:
    transformers' batched ``model.generate`` over left-padded batches of similar length."""
    model, tokenizer = loaded.model, loaded.tokenizer

    def greedy(token_lists: list[list[int]], stops: list[int], pad_id: int, start: int) -> list[str]:
        input_ids, attention_mask = _left_padded(token_lists, pad_id)
        out = model.generate(
            input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=pad_id,
        )
        return _decode_rows(tokenizer, out[:, input_ids.shape[1]:].tolist(), set(stops))

    return _in_batches(loaded, prompts, batch_size, "generate", progress, greedy)


def sample(loaded: Any, prompts: Sequence[str], num_samples: int, max_new_tokens: int, temperature: float,
           batch_size: int, seed: int, progress: bool = True, label: str = "sample") -> list[list[str]]:
    """``num_samples`` completions per prompt at ``temperature`` > 0 (no top-k/top-p, as GRPO
    samples), in prompt order; a batch holds ``max(batch_size, num_samples)`` rows."""
    import torch

    if temperature <= 0:
        raise ValueError(f"sampling needs a temperature above 0, got {temperature}; greedy decoding is generate()")
    model, tokenizer = loaded.model, loaded.tokenizer

    def sampled(token_lists: list[list[int]], stops: list[int], pad_id: int, start: int) -> list[list[str]]:
        # seeded per batch: the same prompts sample the same way on every run
        generator = torch.Generator(device=model.device).manual_seed(int(seed) + start)
        rows = _sample_batch(model, token_lists, pad_id, set(stops), max_new_tokens, num_samples, temperature, generator)
        texts = _decode_rows(tokenizer, rows, set(stops))
        return [texts[position * num_samples:(position + 1) * num_samples] for position in range(len(token_lists))]

    per_batch = max(1, max(batch_size, num_samples) // num_samples)
    return _in_batches(loaded, prompts, per_batch, label, progress, sampled)


def generate_one_at_a_time(loaded: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Reference: ``model.generate`` on each prompt alone (no padding); what ``generate`` must match."""
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    stops = stop_token_ids(tokenizer, model)
    texts = []
    model.eval()
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
            )
            texts.append(_decode_rows(tokenizer, [out[0, ids.shape[1]:].tolist()], set(stops))[0])
    return texts


def sample_with_library(loaded: Any, prompts: Sequence[str], num_samples: int, max_new_tokens: int, temperature: float,
                        batch_size: int, seed: int) -> list[list[str]]:
    """Reference for ``sample``: transformers' batched ``model.generate`` with
    ``num_return_sequences`` (left padding, no top-k/top-p); the library copies each prompt
    ``num_samples`` times before its prefill, where ``sample`` prefills it once."""
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    stops = stop_token_ids(tokenizer, model)
    pad_id = _pad_id(tokenizer, stops)
    token_lists = _tokenized(tokenizer, prompts)
    per_batch = max(1, batch_size // num_samples)
    results: list[list[str]] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(token_lists), per_batch):
            torch.manual_seed(int(seed) + start)
            input_ids, attention_mask = _left_padded(token_lists[start:start + per_batch], pad_id)
            width = input_ids.shape[1]
            out = model.generate(
                input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
                max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                num_return_sequences=num_samples, eos_token_id=stops, pad_token_id=pad_id,
            )
            texts = _decode_rows(tokenizer, out[:, width:].tolist(), set(stops))
            results.extend(texts[row * num_samples:(row + 1) * num_samples] for row in range(len(texts) // num_samples))
    return results


def vllm_usable(cfg: Any) -> bool:
    """vLLM only when asked for, installed, and a GPU is present; never an error otherwise."""
    if not cfg.USE_VLLM or importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def generate_vllm(loaded: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy generation through vLLM (GPU): base weights plus the adapter, or the whole model."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    adapter = loaded.info.get("weights") if loaded.info.get("weights_kind") == "adapter" else None
    engine = LLM(model=loaded.info["model_path"], enable_lora=bool(adapter), trust_remote_code=False)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop_token_ids(loaded.tokenizer))
    lora = LoRARequest("adapter", 1, adapter) if adapter else None
    outputs = engine.generate(list(prompts), params, lora_request=lora)
    return [output.outputs[0].text.strip() for output in outputs]

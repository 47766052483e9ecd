"""Generation: batched greedy decoding equals one prompt at a time; sampling is seeded and shaped."""

from __future__ import annotations

import pytest

from finreason import generation, prompts


def test_generate_batched_equals_one_at_a_time(tiny_loaded, tiny_cfg, dev_examples):
    texts = [prompts.prompt_from_cfg(e, tiny_loaded.tokenizer, tiny_cfg) for e in dev_examples[:5]]
    texts.append("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")  # much shorter: real left padding
    single = generation.generate_one_at_a_time(tiny_loaded, texts, 10)
    batched = generation.generate(tiny_loaded, texts, 10, batch_size=4, progress=False)
    assert batched == single
    assert generation.generate(tiny_loaded, [], 10, batch_size=4) == []


def test_sampling_returns_n_completions_per_prompt_reproducibly(tiny_loaded, tiny_cfg, dev_examples):
    texts = [prompts.prompt_from_cfg(e, tiny_loaded.tokenizer, tiny_cfg) for e in dev_examples[:3]]
    first = generation.sample(tiny_loaded, texts, 4, 6, temperature=1.0, batch_size=8, seed=5, progress=False)
    assert [len(group) for group in first] == [4, 4, 4]
    assert first == generation.sample(tiny_loaded, texts, 4, 6, temperature=1.0, batch_size=8, seed=5, progress=False)
    # a random model at temperature 1 does not repeat itself four times over
    assert any(len(set(group)) > 1 for group in first)


def test_sampling_at_a_tiny_temperature_is_greedy(tiny_loaded, tiny_cfg, dev_examples):
    texts = [prompts.prompt_from_cfg(e, tiny_loaded.tokenizer, tiny_cfg) for e in dev_examples[:2]]
    greedy = generation.generate(tiny_loaded, texts, 6, batch_size=2, progress=False)
    sampled = generation.sample(tiny_loaded, texts, 3, 6, temperature=1e-4, batch_size=6, seed=0, progress=False)
    assert sampled == [[text] * 3 for text in greedy]


def test_the_library_sampler_benchmarked_against_ours_is_shaped_alike(tiny_loaded, tiny_cfg, dev_examples):
    # benchmarks/batched_generation.py times the two on the same prompts: both must give
    # num_samples completions per prompt, in prompt order, and both reduce to greedy when cold
    texts = [prompts.prompt_from_cfg(e, tiny_loaded.tokenizer, tiny_cfg) for e in dev_examples[:3]]
    greedy = generation.generate(tiny_loaded, texts, 6, batch_size=3, progress=False)
    theirs = generation.sample_with_library(tiny_loaded, texts, 2, 6, temperature=1e-4, batch_size=4, seed=0)
    assert theirs == [[text] * 2 for text in greedy]


@pytest.mark.parametrize("temperature", [
    0.0,  # greedy belongs to generate(); sampling at 0 would divide by zero
    -1.0,  # not a temperature
])
def test_sampling_refuses_a_temperature_that_is_not_above_zero(tiny_loaded, temperature):
    with pytest.raises(ValueError, match="temperature above 0"):
        generation.sample(tiny_loaded, ["<|im_start|>user\nHi<|im_end|>\n"], 2, 3, temperature, 2, 0, progress=False)

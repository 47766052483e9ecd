"""Zero-shot baseline: the base model, no adapter, on the evaluation split.

Command:  .venv/bin/python 02_zero_shot_baseline.py [--KEY=value ...]
          e.g. --PROFILE=cpu (SmolLM2-135M, 16 dev examples, minutes on a laptop CPU)
Reads:    FinQA (finreason.data: DATA_DIR, cache, download or the vendored subset), MODEL_NAME.
Writes:   <OUTPUT_DIR>/eval/zero_shot.jsonl (one scored record per example, appended per batch:
          rerunning resumes), <OUTPUT_DIR>/eval/zero_shot.summary.json (accuracies with 95% CIs,
          breakdowns, provenance).

The prompt is exactly the one the trained stages see (finreason.prompts), so later gains come
from training, not from a different prompt. Split and size: EVAL_SPLIT, EVAL_LIMIT.
"""

from __future__ import annotations

import sys

from finreason import cli
from finreason.data import DataError
from finreason.models import ModelError

STAGE = "zero_shot"


def main(argv=None) -> dict:
    _, cfg = cli.parse_args(__doc__.splitlines()[0], argv)

    # seed
    import torch

    torch.manual_seed(cfg.SEED)

    # data
    from finreason import data

    try:
        bundle = data.load_from_config(cfg, splits=(cfg.EVAL_SPLIT,))
    except DataError as error:
        sys.exit(f"error: {error}")
    examples = list(data.iter_examples(bundle, cfg.EVAL_SPLIT, cfg.EVAL_LIMIT))

    # model + tokenizer (the base only)
    from finreason import models

    try:
        loaded = models.load_model(cfg)
    except ModelError as error:
        sys.exit(f"error: {error}")

    # evaluate
    from finreason import evaluation

    summary = evaluation.evaluate(
        loaded, examples, cfg, STAGE, cfg.OUTPUT_DIR, split=cfg.EVAL_SPLIT, data=bundle.describe()
    )
    print(evaluation.format_summary(summary))
    return summary


if __name__ == "__main__":
    main()

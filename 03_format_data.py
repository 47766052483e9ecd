"""Format FinQA for training: SFT prompt/completion pairs and GRPO prompts with verifiable golds.

Command:
    .venv/bin/python 03_format_data.py [--PROFILE=cpu] [--SFT_TRAIN_LIMIT=N] [--GRPO_TRAIN_LIMIT=N] [--KEY=value ...]

Reads FinQA (finreason.data) and the configured model's tokenizer (finreason.models). Writes,
atomically, under OUTPUT_DIR/data/:
- sft_train.jsonl  {"id", "prompt", "completion", "gold", "table"}: prompt from finreason.prompts
  (EVIDENCE_MODE; retrieved evidence of a train example comes from the cross-fitted ranker that
  never saw it), completion in the SFT_TARGET style (reasoning: a sentence citing the gold facts;
  both styles end with the gold Program: and its Answer:), gold answer and table (to score a
  held-out row, SFT_HOLDOUT). SFT_EVIDENCE_VIEWS=both appends every example again prompted with
  its gold facts ("view": "gold"); SFT_PROGRAM_VIEWS=commuted appends every example whose program
  adds or multiplies two different arguments again, its target's program with them swapped
  ("view": "commuted"); SFT_DISTRACTOR_VIEWS=N appends every example N more times, prompted with
  the gold facts its retrieved evidence holds beside other near-miss facts of the ranker
  ("view": "distractors_1" ... "distractors_N")
- sft_dev.jsonl    the same for all of dev (validation loss)
- grpo_train.jsonl {"id", "prompt", "gold" ("yes"/"no" or repr(float)), "table"}
- manifest.json    provenance, tokenizer, evidence mode and retriever, counts, token lengths, the
  share of train and dev prompts holding every gold fact, the self-check

Self-check: every train target (all of train, not only the limited slice) must be strict-correct
under finreason.scoring.score_completion. Examples whose gold program does not reproduce their
gold answer cannot have a correct target; they are left out and listed. Any other failure is a
bug in the target format: the script writes nothing and exits with status 1.
"""

from __future__ import annotations

import argparse
import logging

from finreason import configuration, console, data, models, outputlock, prompts, retrieval, stats, storage, trainset
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.provenance import provenance

_LOG = logging.getLogger("format")


class FormatError(FinReasonError):
    """The training data cannot be written as it is."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def main(argv=None) -> dict:
    args, cfg = configuration.parse_args(__doc__, argv, add_arguments)
    # one writer per output folder: a second run on it stops here with the holder's PID
    with outputlock.hold(cfg.OUTPUT_DIR):
        return run(args, cfg)


def run(args, cfg) -> dict:
    progress = not args.no_progress
    where = Layout.of(cfg)

    # data
    bundle = data.load_from_config(cfg, splits=("train", "dev"))
    train = bundle["train"]
    if not train:
        raise FormatError("the train split has no usable examples")

    # self-check: every SFT target over ALL of train
    check = trainset.check_targets(train, cfg.SFT_TARGET, progress)
    _LOG.info("SFT targets strict-correct: %d/%d", check["strict_correct"], check["checked"])
    if check["inconsistent_gold"]:
        _LOG.info("left out %d examples whose gold program does not give exe_ans", len(check["inconsistent_gold"]))
    if check["failures"]:
        shown = ", ".join(failure["id"] for failure in check["failures"][:5])
        raise FormatError(f"{len(check['failures'])} SFT targets are not strict-correct (e.g. {shown}); nothing written")
    excluded = {item["id"] for item in check["inconsistent_gold"]}

    # tokenizer
    tokenizer = models.load_tokenizer(cfg)

    # format
    usable = [example for example in train if example.id not in excluded]
    sft_examples = data.first(usable, cfg.SFT_TRAIN_LIMIT)
    sft_train = trainset.sft_rows(sft_examples, tokenizer, cfg, "sft train", progress)
    if cfg.SFT_EVIDENCE_VIEWS == "both":
        sft_train += trainset.gold_fact_views(sft_examples, tokenizer, cfg, progress)
    if cfg.SFT_PROGRAM_VIEWS == "commuted":
        sft_train += trainset.commuted_program_views(sft_examples, tokenizer, cfg, progress)
    if cfg.SFT_DISTRACTOR_VIEWS:
        sft_train += trainset.distractor_views(sft_examples, tokenizer, cfg, progress)
    dev = [example for example in bundle["dev"] if trainset.target_is_correct(example, cfg.SFT_TARGET)]
    sft_dev = trainset.sft_rows(dev, tokenizer, cfg, "sft dev", progress)
    grpo_train = trainset.grpo_rows(data.first(usable, cfg.GRPO_TRAIN_LIMIT), tokenizer, cfg, progress)

    # write
    storage.write_jsonl(where.sft_train, sft_train)
    storage.write_jsonl(where.sft_dev, sft_dev)
    storage.write_jsonl(where.grpo_train, grpo_train)
    manifest = {
        "files": {"sft_train": where.sft_train.name, "sft_dev": where.sft_dev.name, "grpo_train": where.grpo_train.name},
        "counts": {"sft_train": len(sft_train), "sft_dev": len(sft_dev), "grpo_train": len(grpo_train)},
        "tokenizer": {"model_name": cfg.MODEL_NAME, "class": type(tokenizer).__name__},
        "prompt": {"evidence_mode": cfg.EVIDENCE_MODE, "retriever": retrieval.used_by(cfg),
                   "token_budget": cfg.PROMPT_TOKEN_BUDGET, "instructions": cfg.PROMPT_INSTRUCTIONS,
                   "few_shot": cfg.FEW_SHOT_EXAMPLE},
        "sft_target": cfg.SFT_TARGET,
        "sft_evidence_views": cfg.SFT_EVIDENCE_VIEWS,
        "sft_program_views": cfg.SFT_PROGRAM_VIEWS,
        "sft_distractor_views": cfg.SFT_DISTRACTOR_VIEWS,
        "sft_train_lengths": trainset.length_stats(sft_train, tokenizer, cfg.MAX_SEQ_LEN),
        # all gold facts in the prompt: train (cross-fitted when the learned ranker chooses) beside dev
        "evidence_coverage": {"sft_train": trainset.evidence_coverage(sft_examples, tokenizer, cfg),
                              "sft_dev": trainset.evidence_coverage(dev, tokenizer, cfg)},
        "self_check": check,
        "provenance": provenance(cfg, data=bundle.describe(), model=cfg.MODEL_NAME),
    }
    storage.atomic_write_json(where.data_manifest, manifest)
    _LOG.info("wrote %s to %s", manifest["counts"], where.data_dir)
    coverage = manifest["evidence_coverage"]
    _LOG.info("prompts holding every gold fact (%s): train %s, dev %s", prompts.evidence_label(cfg.EVIDENCE_MODE, manifest["prompt"]["retriever"]),
              stats.percent(coverage["sft_train"]["all_gold"]), stats.percent(coverage["sft_dev"]["all_gold"]))
    if manifest["sft_train_lengths"]["over_max_seq_len"]:
        _LOG.warning("%d SFT rows exceed MAX_SEQ_LEN=%d", manifest["sft_train_lengths"]["over_max_seq_len"], cfg.MAX_SEQ_LEN)
    return manifest


if __name__ == "__main__":
    console.run_main(main)

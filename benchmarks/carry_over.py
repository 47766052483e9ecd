"""Does it carry over? SFT and GRPO weights on every dev and test question, not only the 100 tuned on.

Command:
    .venv/bin/python benchmarks/carry_over.py --sft DIR --grpo LABEL=DIR [--grpo LABEL=DIR ...]
                                              [--tuned 100] [--retriever DIR] [--dev N] [--test N] [--vote] [--KEY=value ...]
    e.g. after cpu_learning's standard-setting run:
    .venv/bin/python benchmarks/carry_over.py --EVIDENCE_MODE=retrieved
        --retriever outputs/bench/cpu_learning/retrieved/retriever
        --sft outputs/bench/cpu_learning/retrieved/sft/model --grpo grpo=outputs/bench/cpu_learning/retrieved/grpo/model

Every choice in the README's results (recipes, learning rates, GRPO settings) was made looking at
the first --tuned dev questions, so a gain there may be a gain of the choosing. FinQA questions
outside the vendored subset cannot be had offline; the rest of dev and all of test are the questions
nothing was tuned on. Each model (the SFT weights, then each GRPO arm) answers every dev and test
question greedily with 06_evaluate.py's evaluation (cpu profile plus your overrides), in its own folder
<OUTPUT_DIR>/bench/carry_over/<evidence mode>/<label>/<split>/ (with retrieved evidence the run's
fitted ranker is copied in from --retriever, default <OUTPUT_DIR>/retriever; where there is none,
06 fits it), resumable from its records.

Prints a table and writes <OUTPUT_DIR>/bench/carry_over_<evidence mode>.json with, per model and per
group of questions (tuned: the first --tuned dev; dev_not_tuned: the rest of dev; test; not_tuned:
those two together, the carry-over number): n, correct, strict with its 95% bootstrap CI, and for
each GRPO arm against SFT on the same questions: questions gained and lost, the exact McNemar p.
Also each model's weights SHA-256, each evaluation's time, provenance.
--dev and --test answer only the first N of a split (0, the default: all), for a quick look.
--vote (three models or more) adds a row "vote": on each question the answer most of the models
give (agreement as the strict check counts it, scoring.vote; a tie goes to the model listed first,
the SFT weights), compared with SFT like an arm. Different SFT runs get different questions right
at about the same rate; the vote measures how much of that is variance a single run cannot remove.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finreason import configuration, console, data, evaluation, models, scoring, stats, storage
from finreason.errors import FinReasonError
from finreason.layout import Layout
from finreason.prompts import evidence_label
from finreason.provenance import provenance
from finreason.retrieval import used_by

NAME = "carry_over"
_LOG = logging.getLogger(NAME)
BASELINE = "sft"
VOTE = "vote"
# a label names a folder and a JSON key
LABEL = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
GROUPS = ("tuned", "dev_not_tuned", "test", "not_tuned")


class CarryOverError(FinReasonError):
    """Bad arguments."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sft", required=True, metavar="DIR", help="the SFT weights every GRPO arm is compared with")
    parser.add_argument("--grpo", action="append", default=[], metavar="LABEL=DIR",
                        help="a GRPO arm's weights under a short label (lower case, digits, _.-); repeat for several")
    parser.add_argument("--tuned", type=int, default=100, help="the first N dev questions the choices were made on (default 100)")
    parser.add_argument("--retriever", metavar="DIR",
                        help="the run's fitted fact ranker, copied to each folder (default <OUTPUT_DIR>/retriever; none: each evaluation fits it)")
    parser.add_argument("--dev", type=int, default=0, help="answer only the first N dev questions (default 0: all)")
    parser.add_argument("--test", type=int, default=0, help="answer only the first N test questions (default 0: all)")
    parser.add_argument("--vote", action="store_true",
                        help="add a row: each question's majority answer of all the models (3 or more; a tie goes to SFT's)")


def parse_models(sft: str, grpo: Sequence[str]) -> list[tuple[str, str, Path]]:
    """(label, stage, weights) for the SFT weights and each ``LABEL=DIR`` arm, checked: labels that
    can name a folder, none twice, every folder present."""
    chosen = [(BASELINE, "sft", sft)]
    for spec in grpo:
        label, sep, folder = spec.partition("=")
        if not sep or not folder:
            raise CarryOverError(f"--grpo expects LABEL=DIR, got {spec!r}")
        if not LABEL.match(label):
            raise CarryOverError(f"--grpo label {label!r}: use up to 40 lower-case letters, digits, '_', '.' or '-'")
        chosen.append((label, "grpo", folder))
    labels = [label for label, _, _ in chosen]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise CarryOverError(f"each label once ({BASELINE!r} is the SFT weights'): {', '.join(repeated)} given twice")
    if VOTE in labels:
        raise CarryOverError(f"--grpo label {VOTE!r} is the row --vote adds: choose another")
    for label, _, folder in chosen:
        if not Path(folder).is_dir():
            raise CarryOverError(f"{label}: no weights folder at {folder}")
    return [(label, stage, Path(folder)) for label, stage, folder in chosen]


def main(argv=None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = configuration.parse_args(__doc__, ["--PROFILE=cpu", *argv], add_arguments)
    if args.tuned < 0 or args.dev < 0 or args.test < 0:
        raise CarryOverError("--tuned, --dev and --test must not be negative")
    chosen = parse_models(args.sft, args.grpo)
    if args.vote and len(chosen) < 3:
        raise CarryOverError("--vote needs three models or more (--sft and two --grpo): with two, every tie goes to SFT")
    retriever = Path(args.retriever) if args.retriever else Layout.of(cfg).retriever_dir
    if args.retriever and not retriever.is_dir():
        raise CarryOverError(f"--retriever: no folder at {retriever}")
    overrides, _ = configuration.config_tokens(argv)
    run_dir = Layout.of(cfg).bench_dir / NAME / cfg.EVIDENCE_MODE
    # the base converted once under OUTPUT_DIR, not once per folder (a GGUF base is ~0.5 GB of safetensors)
    base_path = models.resolve_model_path(cfg.MODEL_NAME, cfg.OUTPUT_DIR)

    # the questions, in split order: the first --tuned of dev are the ones every choice saw
    bundle = data.load_from_config(cfg, splits=("dev", "test"), verbose=False)
    limits = {"dev": args.dev, "test": args.test}
    order = {split: [example.id for example in data.first(bundle[split], limits[split])] for split in limits}

    # every model on every question, each in its own folder (resumable: 06 keeps its records)
    records: dict[str, dict[str, dict[str, Any]]] = {}
    timings = {}
    for label, stage, weights in chosen:
        for split, limit in limits.items():
            folder = run_dir / label / split
            # the run's ranker, not one refit: the evidence each model was trained and tested with
            if cfg.EVIDENCE_MODE == "retrieved" and retriever.is_dir() and not Layout(folder).retriever_dir.exists():
                shutil.copytree(retriever, Layout(folder).retriever_dir)
            name = f"{label} {split}"
            _LOG.info("%s: %s", name, weights)
            started = time.time()
            folder_cfg = configuration.resolve_config(["--PROFILE=cpu", *overrides, f"--OUTPUT_DIR={folder}", f"--MODEL_NAME={base_path}"])
            evaluation.run_stage(folder_cfg, stage, weights=weights, split=split, limit=limit)
            timings[name] = {"seconds": round(time.time() - started, 1)}
            records.setdefault(label, {}).update(evaluation.read_stage(Layout(folder), stage))

    if args.vote:
        records[VOTE] = majority(records)
    result = summarize(records, question_groups(order, args.tuned), cfg.BOOTSTRAP_SAMPLES, cfg.SEED)
    result.update(
        evidence_mode=cfg.EVIDENCE_MODE, evidence=evidence_label(cfg.EVIDENCE_MODE, used_by(cfg)), tuned=args.tuned,
        voters=[label for label, _, _ in chosen] if args.vote else [],
        weights={label: {"path": str(weights), "sha256": models.weights_fingerprint(weights)} for label, _, weights in chosen},
        timings=timings, provenance=provenance(cfg, data=bundle.describe()),
    )
    path = storage.atomic_write_json(Layout.of(cfg).bench_result(f"{NAME}_{cfg.EVIDENCE_MODE}"), result)
    print(table(result))
    _LOG.info("wrote %s", path)
    return result


def question_groups(order: Mapping[str, Sequence[str]], tuned: int) -> dict[str, list[str]]:
    """The ids of each group: the tuned dev questions, the rest of dev, test, and the last two together."""
    dev, test = list(order["dev"]), list(order["test"])
    return {"tuned": dev[:tuned], "dev_not_tuned": dev[tuned:], "test": test, "not_tuned": dev[tuned:] + test}


def majority(records: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per question every model answered, the record of the answer most models give (``scoring.vote``
    on their executed answers, in the models' order: a tie goes to the first, the SFT weights); a
    question where no model has an answer keeps the first model's (wrong) record."""
    voters = list(records.values())
    chosen = {}
    for question in voters[0]:
        if all(question in by_id for by_id in voters):
            answers = [by_id[question] for by_id in voters]
            index = scoring.vote([answer.get("predicted") for answer in answers])
            chosen[question] = answers[0 if index is None else index]
    return chosen


def summarize(records: Mapping[str, Mapping[str, Mapping[str, Any]]], groups: Mapping[str, Sequence[str]],
              samples: int, seed: int) -> dict[str, Any]:
    """Per group, on the questions every model answered: each model's strict accuracy with its CI,
    and each GRPO arm against the SFT weights question by question (gained, lost, exact McNemar p)."""
    result: dict[str, Any] = {"models": list(records), "groups": {}}
    for group, ids in groups.items():
        answered = [i for i in ids if all(i in by_id for by_id in records.values())]
        strict = {label: [bool(by_id[i].get("strict")) for i in answered] for label, by_id in records.items()}
        rows = {}
        for label, flags in strict.items():
            row = {"correct": sum(flags), "strict": stats.rate(flags), "ci95": list(stats.bootstrap_ci(flags, samples, seed))}
            if label != BASELINE:
                lost, gained = stats.discordant(strict[BASELINE], flags)
                row.update(gained=gained, lost=lost, p_vs_sft=stats.mcnemar(strict[BASELINE], flags))
            rows[label] = row
        result["groups"][group] = {"n": len(answered), "missing": len(ids) - len(answered), "models": rows}
    return result


def table(result: Mapping[str, Any]) -> str:
    pct = stats.percent
    groups = result["groups"]
    rows = []
    for label in result["models"]:
        cells = [label]
        for group in GROUPS:
            row = groups[group]["models"][label]
            cells.append(f"{row['correct']}/{groups[group]['n']} ({pct(row['strict'])})")
        carried = groups["not_tuned"]["models"][label]
        cells.append(f"[{pct(carried['ci95'][0])}, {pct(carried['ci95'][1])}]")
        cells.append("" if label == BASELINE else f"+{carried['gained']} -{carried['lost']}, p {carried['p_vs_sft']:.2g}")
        rows.append(cells)
    return console.table(rows, ("weights", f"tuned dev (first {result['tuned']})", "dev not tuned", "test",
                                "not tuned (dev rest + test)", "95% CI", "vs sft, not tuned"),
                         title=f"carry_over: {result['evidence']}, greedy strict accuracy")


if __name__ == "__main__":
    console.run_main(main)

"""Export the best trained model for use elsewhere: a merged 16-bit folder, GGUF (F16, Q8_0), an Ollama Modelfile.

Command:
    .venv/bin/python 08_export.py [--stage sft|grpo] [--weights DIR] [--verify N] [--dtype float16|bfloat16] [--KEY=value ...]

Reads:  the trained weights: --weights DIR, else <OUTPUT_DIR>/<stage>/adapter|model for --stage,
        else the best trained stage (the highest strict accuracy in <OUTPUT_DIR>/eval/<stage>.summary.json
        made with the weights on disk; else the latest trained stage); the base model MODEL_NAME
        (a LoRA adapter is merged into it); FinQA's dev split for the verification; llama.cpp's
        converter from the llama-cpp-python sdist on PyPI (downloaded once with pip, cached in
        ~/.cache/finreason/llama.cpp/<version>/, or --converter-cache DIR).
Writes: <OUTPUT_DIR>/export/merged/          standalone model folder (safetensors in --dtype, tokenizer
                                             with the chat template, system_prompt.txt,
                                             training_summary.json, README.md model card)
        <OUTPUT_DIR>/export/model-f16.gguf   llama.cpp's convert_hf_to_gguf.py --outtype f16
        <OUTPUT_DIR>/export/model-q8_0.gguf  the same, --outtype q8_0
        <OUTPUT_DIR>/export/Modelfile        Ollama: the Q8_0 GGUF, chat template, system prompt, greedy
        <OUTPUT_DIR>/export/export.json      sizes and the verification, per artefact and runtime
        All of export/ is written into a staging folder beside it and renamed into place at the end,
        so a killed export leaves the previous one whole; its leftovers (and a converter that was
        running, which dies with this process) are gone at the next start.

The prompt settings (EVIDENCE_MODE, RETRIEVER, RETRIEVER_TOP_K, PROMPT_TOKEN_BUDGET,
PROMPT_INSTRUCTIONS, FEW_SHOT_EXAMPLE) are the ones the weights were trained with (their
training_summary.json) unless given on the command line. --verify N (default 20; 0 = skip) answers
the first N dev questions greedily with the trained weights and with every artefact (merged folder
through transformers; each GGUF through llama.cpp, which needs `pip install -r requirements-export.txt`,
and through transformers' GGUF loader) and scores them with the evaluator; it exits 1 when an
artefact misses its target (merged: every answer identical; F16: >= 95%; Q8_0: >= 90% and strict
accuracy within 2 points), after writing everything.
"""

from __future__ import annotations

import argparse
import logging
import sys

from finreason import configuration, console, export, llama_cpp_source, outputlock
from finreason.layout import TRAINED_STAGES, Layout

_LOG = logging.getLogger("export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=TRAINED_STAGES, help="the trained stage to export (default: the best trained one)")
    parser.add_argument("--weights", metavar="DIR", help="trained weights to export: an adapter or model folder")
    parser.add_argument("--verify", type=configuration.non_negative, default=20, metavar="N",
                        help="dev questions to answer with every artefact (default 20; 0 = no verification)")
    parser.add_argument("--dtype", choices=export.DTYPES, default="float16", help="16-bit type of the merged folder (default float16, as the F16 GGUF)")
    parser.add_argument("--converter-cache", default=llama_cpp_source.CONVERTER_CACHE, metavar="DIR",
                        help=f"where llama.cpp's converter is cached (default {llama_cpp_source.CONVERTER_CACHE})")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = configuration.parse_args(__doc__.splitlines()[0], argv, add_arguments)
    # one writer per output folder: 08 writes <OUTPUT_DIR>/export/
    with outputlock.hold(cfg.OUTPUT_DIR):
        explicit = [token[2:].split("=", 1)[0] for token in configuration.config_tokens(argv)[0]]
        stage, weights = export.choose_weights(cfg, args.stage, args.weights)
        cfg, changes = export.prompt_config(cfg, weights, explicit)
        _LOG.info("exporting %s weights %s", stage.upper(), weights)
        plan = export.ExportPlan(cfg=cfg, stage=stage, weights=weights, out=Layout.of(cfg).export_dir, verify=args.verify,
                                 dtype=args.dtype, converter_cache=args.converter_cache, prompt_changes=changes)
        result = export.run_export(plan, progress=not args.quiet)
        print(export.format_table(result))
        print(f"wrote {plan.out} (merged/, {export.F16}, {export.Q8_0}, {export.MODELFILE}, {export.EXPORT_JSON})")
        problems = export.missed(result)
        for line in problems:
            print(f"target missed: {line}", file=sys.stderr)
        return 1 if problems else 0


if __name__ == "__main__":
    console.run_main(main)

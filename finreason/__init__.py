"""FinReason: exact numerical reasoning over FinQA for small language models.

One module owns each concept (the README's "Package map" says the same):
``configuration`` (config.py + profile + --KEY=value, checked), ``console`` (logging, the one
error exit), ``errors``, ``layout`` (where everything lives under OUTPUT_DIR), ``storage``
(atomic files, resumable JSONL), ``provenance``; ``data`` (FinQA), ``programs`` (the FinQA
program language), ``scoring`` (the one correctness check), ``scorefile``, ``prompts``
(evidence + chat messages + SFT targets), ``trainset`` (training rows), ``uploads``;
``models`` (the loader), ``generation``, ``evaluation`` (the one evaluation entry), ``stats``,
``analysis`` and ``report``; ``rewards``, ``difficulty``, ``training``, ``memory``, ``measure``;
``serving`` (the model the app serves), ``rehearsal`` (the rtx4060 profile on the CPU).
"""

__version__ = "0.1.0"

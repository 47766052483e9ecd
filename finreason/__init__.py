"""FinReason: exact numerical reasoning over FinQA for small language models.

Modules: ``data`` (FinQA), ``programs`` (the FinQA program language), ``scoring`` (the one
correctness check), ``prompts`` (evidence + chat messages), ``models``, ``evaluation``,
``rewards``; ``cli`` applies config overrides and ``records`` writes results safely.
"""

__version__ = "0.1.0"

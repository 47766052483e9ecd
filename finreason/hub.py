"""Whether the Hugging Face hub answers, decided once per process before any hub library loads.

huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported, so an offline machine must
set it before that import or the hub libraries still try (and retry) the network. Every script
decides in ``configuration.parse_args``, before any model code imports them, and
``models.resolve_model_path`` decides before its first hub call.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

HUB_HOST = ("huggingface.co", 443)
HUB_PROBE_TIMEOUT_S = 3.0
_LOG = logging.getLogger(__name__)

_reachable: bool | None = None


def hub_reachable() -> bool:
    """True when huggingface.co accepts a connection within seconds; decided once per process.
    An unreachable hub sets HF_HUB_OFFLINE=1 for this process and every process it starts."""
    global _reachable
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    if _reachable is None:
        try:
            with socket.create_connection(HUB_HOST, timeout=HUB_PROBE_TIMEOUT_S):
                _reachable = True
        except OSError:
            _reachable = False
            if "huggingface_hub" in sys.modules:
                _LOG.warning("the hub is unreachable, but huggingface_hub was imported before this check: "
                             "HF_HUB_OFFLINE=1 takes effect only in the processes this one starts")
            os.environ["HF_HUB_OFFLINE"] = "1"
    return _reachable

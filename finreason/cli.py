"""Command-line options for every script: script flags plus ``--KEY=value`` config overrides.

The config is the flat ``config`` module. ``parse_args`` copies its constants, applies the
chosen profile, then the command-line overrides (type-checked against the default; unknown keys
are rejected) and returns an immutable ``Config``. Nothing is changed at import time.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import config as config_module

PROFILE_NAMES = ("rtx4060", "t4", "a100", "cpu")
_OVERRIDE = re.compile(r"^--([A-Z][A-Z0-9_]*)=(.*)$", re.DOTALL)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A bad --KEY=value: unknown key, wrong type, or unknown profile."""


class Config(Mapping[str, Any]):
    """Read-only view of the resolved constants; ``cfg.SEED`` and ``cfg["SEED"]`` both work."""

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config has no constant {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only: use --KEY=value or Config.replace()")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> "Config":
        unknown = set(changes) - set(self._values)
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        return Config({**self._values, **changes})

    def snapshot(self) -> dict[str, Any]:
        """Plain dict for results files."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Config({dict(self._values)!r})"


def default_constants() -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(config_module).items()
        if key.isupper() and key != "PROFILES"
    }


def cuda_available() -> bool:
    # Importing torch costs seconds; on Linux without the NVIDIA driver the answer is known, so
    # light commands (06_evaluate.py --score, --help) stay fast.
    if sys.platform.startswith("linux") and not Path("/proc/driver/nvidia/version").exists() and not shutil.which("nvidia-smi"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_profile(requested: str) -> str:
    if requested == "auto":
        return "rtx4060" if cuda_available() else "cpu"
    if requested not in PROFILE_NAMES:
        raise ConfigError(f"unknown profile {requested!r}; choose one of auto, {', '.join(PROFILE_NAMES)}")
    return requested


def coerce(key: str, raw: str, default: Any) -> Any:
    """Parse ``raw`` as the type of ``default``; raise ConfigError with the reason otherwise."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"--{key} expects a boolean (true/false), got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"--{key} expects an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"--{key} expects a number, got {raw!r}") from None
    if isinstance(default, str):
        return raw
    raise ConfigError(f"--{key} cannot be set from the command line (type {type(default).__name__})")


def resolve_config(overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the profile, then ``--KEY=value`` overrides (last one wins)."""
    values = default_constants()
    parsed: dict[str, str] = {}
    for token in overrides:
        match = _OVERRIDE.match(token)
        if not match:
            raise ConfigError(f"expected --KEY=value with an UPPER_CASE key, got {token!r}")
        key, raw = match.groups()
        if key not in values:
            close = difflib.get_close_matches(key, list(values), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint} (see config.py)")
        parsed[key] = raw
    profile = resolve_profile(parsed.get("PROFILE", values["PROFILE"]))
    values.update(config_module.PROFILES[profile])
    values["PROFILE"] = profile
    for key, raw in parsed.items():
        if key != "PROFILE":
            values[key] = coerce(key, raw, values[key])
    return Config(values)


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[argparse.Namespace, Config]:
    """Parse a script's own flags and the config overrides; exit 2 with a message on error."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog=(
            "Any constant in config.py can be overridden for this run with --KEY=value, "
            "for example --PROFILE=cpu --EVAL_LIMIT=50. Unknown keys are rejected."
        ),
    )
    if add_arguments is not None:
        add_arguments(parser)
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    config_tokens = [token for token in rest if _OVERRIDE.match(token)]
    stray = [token for token in rest if not _OVERRIDE.match(token)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    try:
        cfg = resolve_config(config_tokens)
    except ConfigError as error:
        parser.error(str(error))
    return args, cfg

"""The run's configuration: ``config.py``'s constants, a hardware profile, and ``--KEY=value``.

``resolve_config`` copies the constants, applies the chosen profile, then the command-line
overrides (type-checked against the default, unknown keys rejected), then checks every value
against its allowed range (``RULES``; each constant's comment in ``config.py`` starts with the
same words) and the few rules that tie constants together. It returns a read-only ``Config``
read as ``cfg.KEY``. ``parse_args`` does the same for a script's command line, with the script's
own flags, and exits 2 with one line on any mistake, before anything heavy is imported.
Nothing is changed at import time.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import config as config_module
from finreason import console
from finreason.errors import FinReasonError
from finreason.hub import hub_reachable

_OVERRIDE = re.compile(r"^--([A-Z][A-Z0-9_]*)=(.*)$", re.DOTALL)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(FinReasonError, ValueError):
    """A bad --KEY=value: unknown key, wrong type, out of range, or unknown profile."""


class Config:
    """Read-only view of the resolved constants, read as ``cfg.SEED``.

    ``profile_note`` says how the profile was chosen (``auto: no CUDA device``), for 00_check_env.
    """

    def __init__(self, values: dict[str, Any], profile_note: str = ""):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "profile_note", profile_note)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config has no constant {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only: use --KEY=value or Config.replace()")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied and checked like command-line overrides."""
        unknown = set(changes) - set(self._values)
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        values = {**self._values, **changes}
        check_values(values)
        return Config(values, self.profile_note)

    def snapshot(self) -> dict[str, Any]:
        """Plain dict for results files."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


# --- constants read as a group -------------------------------------------------------------------

@dataclass(frozen=True)
class StageSettings:
    """The settings each trainer has its own copy of, named alike: SFT_BATCH_SIZE, GRPO_BATCH_SIZE, ..."""

    group: str
    batch_size: int
    grad_accum: int
    learning_rate: float
    max_steps: int
    trl_args: str

    def constant(self, setting: str) -> str:
        """The constant ``setting`` is read from, for messages: ``constant("batch_size")`` -> "SFT_BATCH_SIZE"."""
        if setting not in _GROUP_SETTINGS:
            raise AttributeError(f"StageSettings has no setting {setting!r}")
        return f"{self.group}_{setting.upper()}"


_GROUP_SETTINGS = tuple(spec.name for spec in fields(StageSettings) if spec.name != "group")


def stage_settings(cfg: Config, group: str) -> StageSettings:
    """The ``group``'s ("SFT", "GRPO") copy of the settings every trainer has."""
    return StageSettings(group, **{name: getattr(cfg, f"{group}_{name.upper()}") for name in _GROUP_SETTINGS})


@dataclass(frozen=True)
class Shaping:
    """The constants a trainer's weights depend on: every constant of its ``groups`` (by prefix, so a
    new SFT_* constant counts without a change here) and the ``shared`` ones it reads."""

    groups: tuple[str, ...]
    shared: tuple[str, ...]


# what decides whether a killed run may resume (<stage>/run.json) and what its model card lists;
# SAVE_STEPS is left out on purpose (checkpoints more or less often train the same weights), and
# the prompt settings 03 applies are in the training rows' hash instead
_EVERY_TRAINER = ("SEED", "MODEL_NAME", "LOAD_IN_4BIT", "COMPUTE_DTYPE", "FINETUNE", "CPU_PRECISION", "EVIDENCE_MODE")
SHAPED_BY = {
    "sft": Shaping(groups=("LORA", "SFT"), shared=(*_EVERY_TRAINER, "PROMPT_TOKEN_BUDGET", "MAX_SEQ_LEN", "GRADIENT_CHECKPOINTING")),
    # GRPO continues the SFT weights (their LoRA shape included), whose SHA-256 its identity holds
    "grpo": Shaping(groups=("GRPO", "REWARD", "DIFFICULTY"), shared=(*_EVERY_TRAINER, "NUM_GENERATIONS")),
}


def training_settings(cfg: Config, stage: str) -> dict[str, Any]:
    """The constants ``stage``'s weights depend on (``SHAPED_BY``) with their values, in config.py's order."""
    shaping = SHAPED_BY[stage]
    prefixes = tuple(f"{group}_" for group in shaping.groups)
    return {key: getattr(cfg, key) for key in cfg if key in shaping.shared or key.startswith(prefixes)}


# --- allowed values ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """An allowed range. ``text`` is how config.py's comment for the constant states it."""

    text: str
    allows: Callable[[Any], bool]


def at_least(bound: float) -> Rule:
    return Rule(f">= {bound:g}", lambda value: value >= bound)


def above(bound: float) -> Rule:
    return Rule(f"> {bound:g}", lambda value: value > bound)


def one_of(*choices: str) -> Rule:
    return Rule(" | ".join(choices), lambda value: value in choices)


BOOLEAN = Rule("true | false", lambda value: isinstance(value, bool))
NON_EMPTY = Rule("non-empty", lambda value: bool(str(value).strip()))
ANY_FOLDER = Rule("any folder", lambda value: True)
FRACTION_BELOW_ONE = Rule("0 <= x < 1", lambda value: 0 <= value < 1)
FRACTION = Rule("0 <= x <= 1", lambda value: 0 <= value <= 1)
STEPS_OR_EPOCHS = Rule("-1 or >= 1", lambda value: value == -1 or value >= 1)
PROFILE_CHOICES = ("auto", *config_module.PROFILES)
# TRL's config fields are lower_snake_case; the values are checked by TRL's dataclass when the
# trainer's config is built (finreason.training.trl_options), since that needs trl imported
_TRL_ARG = re.compile(r"^[a-z][a-z0-9_]*=[^,=]*$")
TRL_ARGS = Rule("\"\" or name=value[,name=value]", lambda value: value == "" or all(
    _TRL_ARG.match(part.strip()) for part in value.split(",")))

RULES: dict[str, Rule] = {
    "PROFILE": one_of(*PROFILE_CHOICES),
    "SEED": at_least(0),
    "OUTPUT_DIR": NON_EMPTY,
    "DATA_DIR": ANY_FOLDER,
    "FINQA_CACHE_DIR": NON_EMPTY,
    "DOWNLOAD_DATA": BOOLEAN,
    "DOWNLOAD_TIMEOUT_S": above(0),
    "MODEL_NAME": NON_EMPTY,
    "LOAD_IN_4BIT": BOOLEAN,
    "COMPUTE_DTYPE": one_of("bfloat16", "float16", "float32"),
    "USE_UNSLOTH": BOOLEAN,
    "USE_VLLM": BOOLEAN,
    "FINETUNE": one_of("lora", "full"),
    "CPU_PRECISION": one_of("auto", "float32", "bfloat16"),
    "CPU_MEMORY_BUDGET_GB": above(0),
    "EVIDENCE_MODE": one_of("retrieved", "gold"),
    "RETRIEVER": one_of("learned", "bm25", "budget_fill"),
    "RETRIEVER_TOP_K": at_least(1),
    "PROMPT_TOKEN_BUDGET": at_least(1),
    "MAX_SEQ_LEN": at_least(1),
    "PROMPT_INSTRUCTIONS": one_of("full", "brief"),
    "FEW_SHOT_EXAMPLE": BOOLEAN,
    "EVAL_SPLIT": one_of("dev", "test"),
    "EVAL_LIMIT": at_least(0),
    "EVAL_BATCH_SIZE": at_least(1),
    "MAX_NEW_TOKENS": at_least(1),
    "LENIENT_REL_TOL": at_least(0),
    "BOOTSTRAP_SAMPLES": at_least(0),
    "LORA_R": at_least(1),
    "LORA_ALPHA": at_least(1),
    "LORA_DROPOUT": FRACTION_BELOW_ONE,
    "LORA_TARGET_MODULES": NON_EMPTY,
    "SFT_TARGET": one_of("reasoning", "program"),
    "SFT_TRAIN_LIMIT": at_least(0),
    "SFT_EVIDENCE_VIEWS": one_of("one", "both"),
    "SFT_PROGRAM_VIEWS": one_of("one", "commuted"),
    "SFT_DISTRACTOR_VIEWS": at_least(0),
    "SFT_BATCH_SIZE": at_least(1),
    "SFT_GRAD_ACCUM": at_least(1),
    "SFT_LEARNING_RATE": above(0),
    "SFT_EPOCHS": above(0),
    "SFT_MAX_STEPS": STEPS_OR_EPOCHS,
    "SFT_HOLDOUT": at_least(0),
    "SFT_PATIENCE": at_least(1),
    "SAVE_STEPS": at_least(1),
    "GRADIENT_CHECKPOINTING": BOOLEAN,
    "SFT_PAD_TO_MULTIPLE": at_least(1),
    "SFT_TRL_ARGS": TRL_ARGS,
    "GRPO_TRAIN_LIMIT": at_least(0),
    "NUM_GENERATIONS": at_least(2),
    "GRPO_MAX_NEW_TOKENS": at_least(1),
    "GRPO_TEMPERATURE": above(0),
    "GRPO_LEARNING_RATE": above(0),
    "GRPO_BETA": at_least(0),
    "GRPO_LOSS_TYPE": one_of("dr_grpo", "dapo", "grpo", "bnpo"),
    "GRPO_BATCH_SIZE": at_least(1),
    "GRPO_GRAD_ACCUM": at_least(1),
    "GRPO_MAX_STEPS": at_least(1),
    "GRPO_PAD_TO_MULTIPLE": at_least(1),
    "REWARD_CORRECT_WEIGHT": at_least(0),
    "REWARD_FORMAT_WEIGHT": at_least(0),
    "REWARD_MAX_ERROR_SHARE": FRACTION,
    "DIFFICULTY_FILTER": BOOLEAN,
    "DIFFICULTY_MAX_CANDIDATES": at_least(0),
    "GRPO_TRL_ARGS": TRL_ARGS,
    "APP_HOST": NON_EMPTY,
    "APP_MAX_UPLOAD_KB": at_least(1),
}


def _joint_problems(values: dict[str, Any]) -> list[str]:
    """Rules that tie constants together, each with the change that fixes it."""
    problems = []
    per_update = values["GRPO_BATCH_SIZE"] * values["GRPO_GRAD_ACCUM"]
    if per_update % values["NUM_GENERATIONS"]:
        # TRL samples whole groups: every generation batch must hold complete groups
        problems.append(
            f"GRPO_BATCH_SIZE * GRPO_GRAD_ACCUM ({per_update}) must be a multiple of NUM_GENERATIONS "
            f"({values['NUM_GENERATIONS']}); e.g. --GRPO_BATCH_SIZE={values['NUM_GENERATIONS']}"
        )
    if values["SFT_EVIDENCE_VIEWS"] == "both" and values["EVIDENCE_MODE"] != "retrieved":
        problems.append("SFT_EVIDENCE_VIEWS=both adds gold-fact views to retrieved-evidence rows: add --EVIDENCE_MODE=retrieved "
                        "or use --SFT_EVIDENCE_VIEWS=one")
    if values["SFT_DISTRACTOR_VIEWS"] and (values["EVIDENCE_MODE"] != "retrieved" or values["RETRIEVER"] == "budget_fill"):
        problems.append("SFT_DISTRACTOR_VIEWS redraws the distractors a ranker puts beside the gold facts: add --EVIDENCE_MODE=retrieved "
                        "with --RETRIEVER=learned or bm25, or use --SFT_DISTRACTOR_VIEWS=0")
    if values["FINETUNE"] == "full" and values["LOAD_IN_4BIT"]:
        problems.append("FINETUNE=full trains the weights themselves, which cannot be 4-bit: add --LOAD_IN_4BIT=false or use --FINETUNE=lora")
    return problems


def check_values(values: dict[str, Any]) -> None:
    """Raise ConfigError naming the first value outside its allowed range."""
    for key, rule in RULES.items():
        if key in values and not rule.allows(values[key]):
            raise ConfigError(f"--{key} must be {rule.text}, got {values[key]!r}")
    problems = _joint_problems(values)
    if problems:
        raise ConfigError(problems[0])


# --- resolving ----------------------------------------------------------------------------------

def default_constants() -> dict[str, Any]:
    return {key: value for key, value in vars(config_module).items() if key.isupper() and key != "PROFILES"}


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


def resolve_profile(requested: str) -> tuple[str, str]:
    """(profile, how it was chosen)."""
    if requested == "auto":
        if cuda_available():
            return "rtx4060", "auto: a CUDA device is present"
        return "cpu", "auto: no CUDA device"
    if requested not in config_module.PROFILES:
        raise ConfigError(f"--PROFILE must be {RULES['PROFILE'].text}, got {requested!r}")
    return requested, "chosen with --PROFILE"


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
            number = float(raw)
        except ValueError:
            raise ConfigError(f"--{key} expects a number, got {raw!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"--{key} expects a finite number, got {raw!r}")
        return number
    if isinstance(default, str):
        return raw
    raise ConfigError(f"--{key} cannot be set from the command line (type {type(default).__name__})")


def resolve_config(overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the profile, then ``--KEY=value`` overrides (last one wins), then checks."""
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
    profile, note = resolve_profile(parsed.get("PROFILE", values["PROFILE"]))
    values.update(config_module.PROFILES[profile])
    values["PROFILE"] = profile
    for key, raw in parsed.items():
        if key != "PROFILE":
            values[key] = coerce(key, raw, values[key])
    check_values(values)
    return Config(values, note)


def config_tokens(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(--KEY=value tokens, everything else)."""
    overrides = [token for token in argv if _OVERRIDE.match(token)]
    return overrides, [token for token in argv if not _OVERRIDE.match(token)]


def add_split_and_limit(parser: argparse.ArgumentParser) -> None:
    """The evaluation slice options 02 and 06 share (defaults: EVAL_SPLIT, EVAL_LIMIT)."""
    parser.add_argument("--split", choices=("dev", "test"), help="FinQA split (default EVAL_SPLIT)")
    parser.add_argument("--limit", type=non_negative, help="the first N examples of the split (default EVAL_LIMIT; 0 = all)")


def non_negative(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or a positive count, got {value}")
    return value


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[argparse.Namespace, Config]:
    """Parse a script's own flags and the config overrides; exit 2 with one line on a mistake.

    Also sets up logging (``--quiet``: warnings and errors only) and decides whether the hub is
    reachable (``hub.hub_reachable``), while no hub library is imported yet."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog=(
            "Any constant in config.py can be overridden for this run with --KEY=value, "
            "for example --PROFILE=cpu --EVAL_LIMIT=50. Unknown keys and out-of-range values are rejected."
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    if add_arguments is not None:
        add_arguments(parser)
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    overrides, stray = config_tokens(rest)
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    try:
        cfg = resolve_config(overrides)
    except ConfigError as error:
        parser.error(str(error))
    console.setup_logging(quiet=args.quiet)
    # Before any model code imports the hub libraries, which read HF_HUB_OFFLINE only then.
    hub_reachable()
    return args, cfg

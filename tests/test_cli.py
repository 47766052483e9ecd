"""Config overrides: type-checked, unknown keys rejected, profiles applied, Config read-only."""

import pytest

import config
from finreason.cli import Config, ConfigError, parse_args, resolve_config


@pytest.mark.parametrize(
    "overrides, key, expected",
    [
        (["--EVAL_LIMIT=5"], "EVAL_LIMIT", 5),  # int default: parsed as int
        (["--LENIENT_REL_TOL=0.05"], "LENIENT_REL_TOL", 0.05),  # float default: parsed as float
        (["--LENIENT_REL_TOL=1"], "LENIENT_REL_TOL", 1.0),  # an integer literal is a fine float
        (["--MODEL_NAME=/models/x"], "MODEL_NAME", "/models/x"),  # strings pass through
        (["--DATA_DIR="], "DATA_DIR", ""),  # an empty string is a value
        (["--EVAL_LIMIT=5", "--EVAL_LIMIT=7"], "EVAL_LIMIT", 7),  # the last override wins
        (["--LOAD_IN_4BIT=true"], "LOAD_IN_4BIT", True),  # bool: true
        (["--LOAD_IN_4BIT=False"], "LOAD_IN_4BIT", False),  # bool: case-insensitive
        (["--LOAD_IN_4BIT=0"], "LOAD_IN_4BIT", False),  # bool: 0
        (["--USE_VLLM=yes"], "USE_VLLM", True),  # bool: yes
        (["--USE_VLLM=off"], "USE_VLLM", False),  # bool: off
    ],
)
def test_overrides_are_typed(overrides, key, expected):
    value = resolve_config(["--PROFILE=cpu", *overrides])[key]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--EVAL_LIMIT=abc"], "expects an integer"),  # not an int
        (["--EVAL_LIMIT=1.5"], "expects an integer"),  # a float is not an int
        (["--LENIENT_REL_TOL=lots"], "expects a number"),  # not a float
        (["--LOAD_IN_4BIT=maybe"], "expects a boolean"),  # not a bool
        (["--EVAL_LIMT=5"], "did you mean EVAL_LIMIT"),  # unknown key, with a suggestion
        (["--NOT_A_KEY_AT_ALL_XYZ=1"], "unknown config key"),  # unknown key, nothing close
        (["--eval_limit=5"], "UPPER_CASE"),  # keys are upper case
        (["--PROFILES=x"], "unknown config key"),  # the profile table itself is not a constant
        (["--PROFILE=bogus"], "unknown profile"),  # profile names are fixed
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(overrides)


def test_cpu_profile_applies():
    cfg = resolve_config(["--PROFILE=cpu"])
    assert cfg.PROFILE == "cpu"
    for key, value in config.PROFILES["cpu"].items():
        assert cfg[key] == value


def test_override_beats_profile_in_any_order():
    assert resolve_config(["--PROFILE=cpu", "--EVAL_LIMIT=3"]).EVAL_LIMIT == 3
    assert resolve_config(["--EVAL_LIMIT=3", "--PROFILE=cpu"]).EVAL_LIMIT == 3
    assert resolve_config(["--PROFILE=cpu"]).EVAL_LIMIT == config.PROFILES["cpu"]["EVAL_LIMIT"]


def test_other_profiles_differ_from_cpu():
    assert resolve_config(["--PROFILE=a100"]).MODEL_NAME == config.PROFILES["a100"]["MODEL_NAME"]
    assert resolve_config(["--PROFILE=rtx4060"]).MODEL_NAME == config.MODEL_NAME


def test_config_is_read_only():
    cfg = resolve_config(["--PROFILE=cpu"])
    with pytest.raises(AttributeError, match="read-only"):
        cfg.SEED = 1
    with pytest.raises(TypeError):
        cfg["SEED"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        cfg.NOT_A_KEY  # noqa: B018
    changed = cfg.replace(SEED=7)
    assert (changed.SEED, cfg.SEED) == (7, config.SEED)
    with pytest.raises(ConfigError):
        cfg.replace(NOT_A_KEY=1)
    snapshot = cfg.snapshot()
    snapshot["SEED"] = 99
    assert cfg.SEED == config.SEED and isinstance(cfg, Config)


def test_importing_config_changes_nothing():
    resolve_config(["--PROFILE=cpu", "--SEED=5"])
    assert config.SEED == 42 and config.PROFILE == "auto"


def test_parse_args_script_flags_and_overrides():
    def add(parser):
        parser.add_argument("--score", default=None)

    args, cfg = parse_args("demo", ["--score", "f.jsonl", "--PROFILE=cpu", "--EVAL_LIMIT=2"], add)
    assert args.score == "f.jsonl" and cfg.EVAL_LIMIT == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--PROFILE=cpu", "--EVAL_LIMIT=abc"],  # a bad value: usage error, not a traceback
        ["--PROFILE=cpu", "stray"],  # an unknown positional
        ["--PROFILE=cpu", "--nope"],  # an unknown flag
    ],
)
def test_parse_args_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args("demo", argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args("demo script", ["--help"])
    assert exit_info.value.code == 0
    assert "--KEY=value" in capsys.readouterr().out

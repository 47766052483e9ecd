"""Config overrides: type- and range-checked, unknown keys rejected, profiles applied, Config read-only."""

import re
from pathlib import Path

import pytest

import config
from finreason.configuration import (
    RULES, SHAPED_BY, Config, ConfigError, StageSettings, default_constants, parse_args, resolve_config, stage_settings, training_settings,
)


@pytest.mark.parametrize(
    "overrides, key, expected",
    [
        (["--EVAL_LIMIT=5"], "EVAL_LIMIT", 5),  # int default: parsed as int
        (["--LENIENT_REL_TOL=0.05"], "LENIENT_REL_TOL", 0.05),  # float default: parsed as float
        (["--LENIENT_REL_TOL=1"], "LENIENT_REL_TOL", 1.0),  # an integer literal is a fine float
        (["--MODEL_NAME=/models/x"], "MODEL_NAME", "/models/x"),  # strings pass through
        (["--DATA_DIR="], "DATA_DIR", ""),  # an empty string is a value
        (["--EVAL_LIMIT=5", "--EVAL_LIMIT=7"], "EVAL_LIMIT", 7),  # the last override wins
        (["--LOAD_IN_4BIT=true", "--FINETUNE=lora"], "LOAD_IN_4BIT", True),  # bool: true (4-bit needs LoRA)
        (["--LOAD_IN_4BIT=False"], "LOAD_IN_4BIT", False),  # bool: case-insensitive
        (["--LOAD_IN_4BIT=0"], "LOAD_IN_4BIT", False),  # bool: 0
        (["--USE_VLLM=yes"], "USE_VLLM", True),  # bool: yes
        (["--USE_VLLM=off"], "USE_VLLM", False),  # bool: off
    ],
)
def test_overrides_are_typed(overrides, key, expected):
    value = getattr(resolve_config(["--PROFILE=cpu", *overrides]), key)
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
        (["--PROFILE=bogus"], "PROFILE must be auto"),  # profile names are fixed
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(overrides)


def test_cpu_profile_applies():
    cfg = resolve_config(["--PROFILE=cpu"])
    assert cfg.PROFILE == "cpu"
    for key, value in config.PROFILES["cpu"].items():
        assert getattr(cfg, key) == value


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


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--EVAL_LIMIT=-1"], "--EVAL_LIMIT must be >= 0, got -1"),  # would silently mean "all"
        (["--MAX_NEW_TOKENS=0"], "--MAX_NEW_TOKENS must be >= 1"),  # empty completions scored as no answer
        (["--SEED=-1"], "--SEED must be >= 0"),  # numpy refuses it after generation has finished
        (["--OUTPUT_DIR="], "--OUTPUT_DIR must be non-empty"),  # would write into the repository root
        (["--OUTPUT_DIR=   "], "--OUTPUT_DIR must be non-empty"),  # blanks are empty too
        (["--EVAL_BATCH_SIZE=0"], "--EVAL_BATCH_SIZE must be >= 1"),  # a batch holds at least one prompt
        (["--SFT_LEARNING_RATE=0"], "--SFT_LEARNING_RATE must be > 0"),  # rates are positive
        (["--GRPO_TEMPERATURE=-0.5"], "--GRPO_TEMPERATURE must be > 0"),  # sampling needs a positive temperature
        (["--SFT_LEARNING_RATE=nan"], "finite number"),  # nan passes every comparison the wrong way
        (["--DOWNLOAD_TIMEOUT_S=inf"], "finite number"),  # an infinite timeout is a hang
        (["--LORA_DROPOUT=1"], "--LORA_DROPOUT must be 0 <= x < 1"),  # dropout 1 drops everything
        (["--SFT_MAX_STEPS=0"], "--SFT_MAX_STEPS must be -1 or >= 1"),  # 0 steps trains nothing
        (["--NUM_GENERATIONS=1"], "--NUM_GENERATIONS must be >= 2"),  # a group of one has no advantage
        (["--NUM_GENERATIONS=3"], "multiple of NUM_GENERATIONS"),  # 4 x 4 completions do not split into groups of 3
        (["--EVAL_SPLIT=train"], "--EVAL_SPLIT must be dev | test"),  # train is what we learn from
        (["--COMPUTE_DTYPE=fp16"], "bfloat16 | float16 | float32"),  # dtype names are torch's
        (["--EVIDENCE_MODE=oracle"], "retrieved | gold"),  # two modes only
        (["--FINETUNE=full", "--LOAD_IN_4BIT=true"], "cannot be 4-bit"),  # full fine-tuning needs real weights
        (["--APP_HOST="], "--APP_HOST must be non-empty"),  # the app must bind somewhere
        (["--REWARD_MAX_ERROR_SHARE=1.5"], "--REWARD_MAX_ERROR_SHARE must be 0 <= x <= 1"),  # a share above all rewards
        (["--REWARD_MAX_ERROR_SHARE=-0.1"], "--REWARD_MAX_ERROR_SHARE must be 0 <= x <= 1"),  # a negative share
        (["--CPU_PRECISION=float16"], "auto | float32 | bfloat16"),  # CPUs have no fast float16 matmul
        (["--SFT_TRL_ARGS=max_grad_norm"], 'must be "" or name=value'),  # a field without its value
        (["--GRPO_TRL_ARGS=top_p=0.9;top_k=5"], 'must be "" or name=value'),  # one separator: the comma
        (["--SFT_TRL_ARGS=MaxGradNorm=1"], 'must be "" or name=value'),  # TRL's fields are snake_case
        (["--SFT_EVIDENCE_VIEWS=both", "--EVIDENCE_MODE=gold"], "add --EVIDENCE_MODE=retrieved"),  # gold rows already are the gold view
        (["--SFT_EVIDENCE_VIEWS=all"], "one | both"),  # two settings only
        (["--SFT_PROGRAM_VIEWS=sympy"], "one | commuted"),  # swapped arguments are the one rewrite there is
        (["--SFT_DISTRACTOR_VIEWS=-1"], "--SFT_DISTRACTOR_VIEWS must be >= 0"),  # a count of views
        (["--SFT_DISTRACTOR_VIEWS=2"], "add --EVIDENCE_MODE=retrieved"),  # gold prompts have no distractors to redraw
        (["--SFT_DISTRACTOR_VIEWS=2", "--EVIDENCE_MODE=retrieved", "--RETRIEVER=budget_fill"], "--RETRIEVER=learned or bm25"),  # no ranking to redraw from
    ],
)
def test_out_of_range_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(["--PROFILE=cpu", *overrides])


@pytest.mark.parametrize(
    "overrides",
    [
        ["--EVAL_LIMIT=0"],  # 0 = the whole split
        ["--SFT_MAX_STEPS=-1"],  # -1 = use SFT_EPOCHS
        ["--GRPO_BETA=0"],  # no reference model
        ["--LORA_DROPOUT=0"],  # no dropout
        ["--DATA_DIR="],  # "" = find the data automatically
        ["--NUM_GENERATIONS=8", "--GRPO_BATCH_SIZE=8"],  # 8 x 2 completions: two groups of 8
        ["--REWARD_MAX_ERROR_SHARE=0"],  # the first reward that raises stops the run
        ["--REWARD_MAX_ERROR_SHARE=1"],  # reward errors are counted but never stop the run
        ["--SFT_TRL_ARGS="],  # no TRL option
        ["--GRPO_TRL_ARGS=top_p=0.9, max_grad_norm=0.5"],  # blanks after the comma are fine
        ["--SFT_EVIDENCE_VIEWS=both", "--EVIDENCE_MODE=retrieved"],  # retrieved rows plus their gold-fact views
        ["--SFT_HOLDOUT=40", "--SFT_PATIENCE=1"],  # choose the epoch on 40 held-out training rows
        ["--SFT_PROGRAM_VIEWS=commuted"],  # equal programs in either evidence mode
        ["--SFT_PROGRAM_VIEWS=commuted", "--SFT_EVIDENCE_VIEWS=both", "--EVIDENCE_MODE=retrieved"],  # both kinds of view at once
        ["--SFT_DISTRACTOR_VIEWS=3", "--EVIDENCE_MODE=retrieved"],  # three redrawn-distractor views beside each retrieved row
        ["--SFT_DISTRACTOR_VIEWS=1", "--EVIDENCE_MODE=retrieved", "--RETRIEVER=bm25"],  # BM25 ranks too
    ],
)
def test_edge_values_inside_the_range_are_accepted(overrides):
    resolve_config(["--PROFILE=cpu", *overrides])


@pytest.mark.parametrize("profile", ["rtx4060", "t4", "a100", "cpu"])
def test_every_profile_is_within_range(profile):
    resolve_config([f"--PROFILE={profile}"])


def test_every_constant_has_a_rule_its_comment_states():
    """config.py's comment for each constant starts with the range the code enforces."""
    constants = default_constants()
    assert set(RULES) == set(constants), "a constant without a range rule (or a rule without a constant)"
    source = Path(config.__file__).read_text(encoding="utf-8")
    for key, rule in RULES.items():
        line = re.search(rf"^{key} = .*?#(.*)$", source, re.MULTILINE)
        assert line is not None, f"{key} has no comment"
        assert line.group(1).strip().startswith(rule.text), f"{key}'s comment should start with {rule.text!r}"


def test_range_error_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args("demo", ["--PROFILE=cpu", "--EVAL_LIMIT=-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--EVAL_LIMIT must be >= 0" in err and "Traceback" not in err


def test_profile_note_says_how_the_profile_was_chosen():
    assert resolve_config(["--PROFILE=cpu"]).profile_note == "chosen with --PROFILE"
    assert resolve_config([]).profile_note.startswith("auto:")


@pytest.mark.parametrize(
    "overrides, group, expected",
    [
        (["--SFT_BATCH_SIZE=3", "--SFT_TRL_ARGS=max_grad_norm=0.5"], "SFT",  # the group's own constants, overrides applied
         StageSettings("SFT", batch_size=3, grad_accum=8, learning_rate=1e-4, max_steps=-1, trl_args="max_grad_norm=0.5")),
        (["--GRPO_MAX_STEPS=7"], "GRPO",  # the other trainer's copy, never SFT's
         StageSettings("GRPO", batch_size=1, grad_accum=4, learning_rate=1e-5, max_steps=7, trl_args="")),
    ],
)
def test_stage_settings_read_a_group(overrides, group, expected):
    found = stage_settings(resolve_config(["--PROFILE=cpu", *overrides]), group)
    assert found == expected
    assert found.constant("batch_size") == f"{group}_BATCH_SIZE" and found.constant("trl_args") == f"{group}_TRL_ARGS"
    with pytest.raises(AttributeError, match="no setting 'batch'"):
        found.constant("batch")  # a typo is an error, not a constant that does not exist


@pytest.mark.parametrize(
    "stage, expected",
    [
        # what decides whether a killed SFT run may resume, and its model card's table (as before SHAPED_BY)
        ("sft", {"MODEL_NAME", "FINETUNE", "LOAD_IN_4BIT", "COMPUTE_DTYPE", "CPU_PRECISION", "EVIDENCE_MODE", "SFT_TARGET",
                 "MAX_SEQ_LEN", "PROMPT_TOKEN_BUDGET", "LORA_R", "LORA_ALPHA", "LORA_DROPOUT", "LORA_TARGET_MODULES",
                 "SFT_TRAIN_LIMIT", "SFT_BATCH_SIZE", "SFT_GRAD_ACCUM", "SFT_LEARNING_RATE", "SFT_EPOCHS", "SFT_MAX_STEPS",
                 "SFT_HOLDOUT", "SFT_PATIENCE",  # they choose the epoch whose weights are kept
                 "SFT_EVIDENCE_VIEWS", "SFT_PROGRAM_VIEWS", "SFT_DISTRACTOR_VIEWS",  # what the rows hold (its hash too), but a resumed run must not mix settings
                 "GRADIENT_CHECKPOINTING", "SFT_PAD_TO_MULTIPLE", "SFT_TRL_ARGS", "SEED"}),
        # the same for GRPO: its own constants, the rewards and the filter, not the LoRA shape (the SFT weights' hash holds it)
        ("grpo", {"MODEL_NAME", "FINETUNE", "LOAD_IN_4BIT", "COMPUTE_DTYPE", "CPU_PRECISION", "EVIDENCE_MODE", "GRPO_TRAIN_LIMIT",
                  "NUM_GENERATIONS", "GRPO_MAX_NEW_TOKENS", "GRPO_TEMPERATURE", "GRPO_LEARNING_RATE", "GRPO_BETA",
                  "GRPO_LOSS_TYPE", "GRPO_BATCH_SIZE", "GRPO_GRAD_ACCUM", "GRPO_MAX_STEPS", "GRPO_PAD_TO_MULTIPLE", "REWARD_CORRECT_WEIGHT",
                  "REWARD_FORMAT_WEIGHT", "REWARD_MAX_ERROR_SHARE", "DIFFICULTY_FILTER", "DIFFICULTY_MAX_CANDIDATES",
                  "GRPO_TRL_ARGS", "SEED"}),
    ],
)
def test_training_settings_are_what_a_run_is_resumed_by(stage, expected):
    cfg = resolve_config(["--PROFILE=cpu"])
    found = training_settings(cfg, stage)
    assert set(found) == expected
    assert list(found) == [key for key in cfg if key in expected]  # config.py's order, as the model card lists them
    assert found == {key: getattr(cfg, key) for key in expected}


@pytest.mark.parametrize(
    "added, stages",
    [
        ("SFT_WARMUP_RATIO", {"sft"}),  # a new constant of a trainer's group counts without another change
        ("LORA_BIAS", {"sft"}),
        ("REWARD_LENGTH_WEIGHT", {"grpo"}),
        ("EVAL_NEW_KNOB", set()),  # nobody trains with an evaluation setting
    ],
)
def test_a_new_group_constant_is_part_of_the_run_by_its_name(added, stages):
    cfg = Config({**resolve_config(["--PROFILE=cpu"]).snapshot(), added: 0.1})
    assert {stage for stage in SHAPED_BY if added in training_settings(cfg, stage)} == stages

"""Choosing SFT's epoch on held-out training rows (finreason.epoch_choice), and 04 end to end with it."""

from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file

from finreason import epoch_choice, training
from finreason.training import TrainingInputError
from finreason.training_record import TrainingRecord
from helpers import load_script
from test_training import common_args, formatted  # noqa: F401 - formatted is the module fixture 03 writes

SFT = load_script("04_train_sft.py")


def rows(count: int, **extra) -> list[dict]:
    return [{"id": f"q{i}", "prompt": "p", "completion": "c", "gold": "1.0", "table": [], **extra} for i in range(count)]


@pytest.mark.parametrize(
    ("count", "seed", "trained", "held"),
    [
        (0, 42, 10, 0),  # 0 = train on every row, choose nothing
        (3, 42, 7, 3),  # a seeded draw of 3
        (9, 1, 1, 9),  # all but one is allowed
    ],
)
def test_hold_out_splits_rows_in_file_order(count, seed, trained, held):
    train, out = epoch_choice.hold_out(rows(10), count, seed)
    assert (len(train), len(out)) == (trained, held)
    assert {row["id"] for row in train} | {row["id"] for row in out} == {f"q{i}" for i in range(10)}
    assert [row["id"] for row in out] == sorted((row["id"] for row in out), key=lambda name: int(name[1:]))
    # the same seed holds out the same rows (a resumed run), another seed others
    assert epoch_choice.hold_out(rows(10), count, seed) == (train, out)


def test_held_out_examples_leave_training_in_every_view():
    given = rows(6) + rows(6, view="gold")
    train, out = epoch_choice.hold_out(given, 2, 42)
    held = {row["id"] for row in out}
    assert len(out) == 2 and all("view" not in row for row in out)  # scored in the run's own evidence
    assert len(train) == 8 and not held & {row["id"] for row in train}  # no gold view of a held-out question is learned
    with pytest.raises(TrainingInputError, match="every one of the 6"):
        epoch_choice.hold_out(given, 6, 42)  # views are not examples: 6 held out of 6 leaves nothing


def test_another_seed_holds_out_other_rows():
    assert epoch_choice.hold_out(rows(40), 5, 1)[1] != epoch_choice.hold_out(rows(40), 5, 2)[1]


@pytest.mark.parametrize(
    ("given", "count", "message"),
    [
        (rows(4), 4, "holds out every one of the 4"),  # nothing left to train on
        (rows(4), 9, "holds out every one of the 4"),  # more than there are
        ([{"id": f"q{i}", "prompt": "p", "completion": "c"} for i in range(4)], 2, "rerun python 03_format_data.py"),  # an old file: no gold
        (rows(4, table="not a table"), 2, "has no 'table'"),  # a damaged row
    ],
)
def test_hold_out_refuses_what_it_cannot_score(given, count, message):
    with pytest.raises(TrainingInputError, match=message):
        epoch_choice.hold_out(given, count, 42)


@pytest.mark.parametrize(
    ("scores", "waited"),
    [
        ([], 0),  # nothing scored yet
        ([0.1], 0),  # the only epoch is the best
        ([0.1, 0.2, 0.3], 0),  # still improving
        ([0.3, 0.2], 1),  # one epoch worse
        ([0.2, 0.3, 0.1, 0.3], 2),  # a tie counts from the first: the later epoch is no better
        ([0.0, 0.0, 0.0], 2),  # nothing learned: the first epoch is kept
    ],
)
def test_epochs_since_best(scores, waited):
    assert epoch_choice.epochs_since_best(scores) == waited


def test_transformers_still_has_the_best_checkpoint_loader():
    # restore_best calls it: a transformers without it fails here, not after a training run
    from transformers import Trainer

    assert callable(getattr(Trainer, "_load_best_model", None))


# --- 04 end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory, formatted, tiny_qwen2_dir):
    """At most 3 epochs of 2 steps (4 trained rows, 2 held out), patience 1: the random model
    answers nothing right, so epoch 1 stays best and epoch 2 ends the run."""
    out = tmp_path_factory.mktemp("held_out")
    shutil.copytree(formatted / "data", out / "data")
    argv = common_args(out, tiny_qwen2_dir, "--SFT_EPOCHS=3", "--SFT_HOLDOUT=2", "--SFT_PATIENCE=1", "--SAVE_STEPS=50", "--no-eval")
    return out, SFT.main(argv), argv


@pytest.mark.slow
def test_sft_stops_when_the_held_out_score_stops_improving_and_keeps_the_best_epoch(held_out_run):
    out, summary, _ = held_out_run
    assert summary["train_rows"] == 4
    choice = summary["epoch_choice"]
    assert [entry["step"] for entry in choice["curve"]] == [2, 4]
    assert [entry["holdout_n"] for entry in choice["curve"]] == [2, 2]
    assert choice["chosen_step"] == 2 and choice["chosen_epoch"] == 1 and choice["stopped_early"] is True
    assert summary["global_step"] == 4
    # the saved adapter is epoch 1's (its checkpoint kept by rotation), not the last step's
    saved = load_file(out / "sft" / "adapter" / "adapter_model.safetensors")
    best = load_file(out / "sft" / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    last = load_file(out / "sft" / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert saved.keys() == best.keys()
    assert all((saved[name] == best[name]).all() for name in saved)
    assert any((saved[name] != last[name]).any() for name in saved)
    # the curve is in the step log and the card, and the record reads back
    log = epoch_choice.curve(out / "sft" / "step_log.jsonl")
    assert [entry["step"] for entry in log] == [2, 4]
    assert "epoch kept" in (out / "sft" / "adapter" / "README.md").read_text(encoding="utf-8")
    assert TrainingRecord.read(out / "sft" / "adapter").epoch_choice == choice


@pytest.mark.slow
def test_a_run_killed_after_its_best_epoch_resumes_with_its_curve(held_out_run, tiny_qwen2_dir, tmp_path):
    # a kill during epoch 2: checkpoint-2 (epoch 1, the best) is what is left
    out, _, argv = held_out_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "sft" / "checkpoints" / "checkpoint-4")
    shutil.rmtree(copy / "sft" / "adapter")
    resumed = SFT.main([*(a for a in argv if not a.startswith("--OUTPUT_DIR=")), f"--OUTPUT_DIR={copy}"])
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert [entry["step"] for entry in resumed["epoch_choice"]["curve"]] == [2, 4]
    assert resumed["epoch_choice"]["chosen_step"] == 2
    assert [entry["step"] for entry in epoch_choice.curve(copy / "sft" / "step_log.jsonl")] == [2, 4]
    steps = [entry["step"] for entry in training.read_step_log(copy / "sft" / "step_log.jsonl")]
    assert steps == sorted(set(steps))

"""How many SFT epochs: chosen on held-out training rows (SFT_HOLDOUT), never on dev or test.

With a few hundred training examples the number of passes decides much of what SFT learns (a
second epoch took the cpu profile's retrieved-evidence SFT from 14 to 19 of 100 dev questions),
and dev must not be what chooses it. So ``hold_out`` keeps a seeded draw of SFT_HOLDOUT training
rows out of training, and ``epoch_rule_callback`` answers them greedily after every epoch, scored
by the evaluation's own strict check (``rewards.is_correct``). The epoch is saved as a checkpoint
either way, and a better score makes it transformers' best checkpoint (``TrainerState``'s
``best_global_step``/``best_metric``), which checkpoint rotation keeps and a resumed run reads
back. After SFT_PATIENCE epochs without a better score training stops; ``restore_best`` then puts
the best epoch's weights back before the stage is saved. Each score is also a line of the stage's
step log (``{"step", "epoch", "holdout_strict", "holdout_correct", "holdout_n"}``: ``curve``), which
``training.prepare_run`` cuts back with the rest of the log when a killed run resumes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from finreason import generation, rewards, storage
from finreason.models import LoadedModel
from finreason.training import TrainingInputError, read_step_log

_LOG = logging.getLogger(__name__)

# what a held-out row needs besides its prompt: the reward's check scores the answer against these
HOLDOUT_FIELDS = {"gold": str, "table": list}
SCORE = "holdout_strict"


def hold_out(rows: Sequence[dict[str, Any]], count: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows to train on, ``count`` rows held out), both in file order; the held-out rows are a
    draw seeded by ``seed`` among the rows in the run's own evidence and target (not another
    ``view`` of an example: SFT_EVIDENCE_VIEWS, SFT_PROGRAM_VIEWS, SFT_DISTRACTOR_VIEWS), so a
    resumed or repeated run, with views or without, holds out the same ones, and every other view
    of a held-out example is left out of training too."""
    if count == 0:
        return list(rows), []
    primary = [index for index, row in enumerate(rows) if "view" not in row]
    if count >= len(primary):
        raise TrainingInputError(f"SFT_HOLDOUT={count} holds out every one of the {len(primary)} training examples; "
                                 f"lower --SFT_HOLDOUT (0 trains on all of them)")
    held = set(random.Random(seed).sample(primary, count))
    held_ids = {rows[index]["id"] for index in held}
    for index in sorted(held):
        row = rows[index]
        for name, kind in HOLDOUT_FIELDS.items():
            if not isinstance(row.get(name), kind):
                raise TrainingInputError(f"training row {row.get('id')!r} has no {name!r} to score a held-out answer "
                                         "against (written before SFT_HOLDOUT existed); rerun python 03_format_data.py")
    return ([row for row in rows if row["id"] not in held_ids],
            [row for index, row in enumerate(rows) if index in held])


def score(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int, batch_size: int) -> list[bool]:
    """Whether each row's greedy answer is strictly correct: the evaluation's decoding and check."""
    answers = generation.generate(LoadedModel(model, tokenizer), [row["prompt"] for row in rows], max_new_tokens,
                                  batch_size, progress=False)
    return [rewards.is_correct(answer, row["gold"], row["table"]) for answer, row in zip(answers, rows)]


def curve(step_log: Any) -> list[dict[str, Any]]:
    """The held-out score after each epoch, in order, as the step log holds them."""
    return [entry for entry in read_step_log(step_log) if SCORE in entry]


def epochs_since_best(scores: Sequence[float]) -> int:
    """Epochs after the best score (the first of equal ones: fewer passes, the same result)."""
    if not scores:
        return 0
    best = scores.index(max(scores))
    return len(scores) - 1 - best


def epoch_rule_callback(rows: Sequence[dict[str, Any]], tokenizer: Any, cfg: Any, step_log: Any) -> Any:
    """A TrainerCallback that scores the held-out ``rows`` after every epoch (see the module docstring)."""
    from transformers import TrainerCallback

    class EpochRule(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
            # every rank scores (the same weights, greedy: the same verdicts), so all stop together
            verdicts = score(model, tokenizer, rows, cfg.MAX_NEW_TOKENS, cfg.EVAL_BATCH_SIZE)
            value = sum(verdicts) / len(verdicts)
            entry = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), SCORE: value,
                     "holdout_correct": sum(verdicts), "holdout_n": len(verdicts)}
            # in trainer_state.json too, so a run resumed from this epoch's checkpoint knows its curve
            state.log_history.append(entry)
            if state.is_world_process_zero:
                storage.append_jsonl(step_log, [entry])
            if state.best_metric is None or value > state.best_metric:
                state.best_metric, state.best_global_step = value, state.global_step
            # this epoch's checkpoint: the best one is kept by rotation and restored at the end
            control.should_save = True
            scores = [item[SCORE] for item in state.log_history if SCORE in item]
            waited = epochs_since_best(scores)
            _LOG.info("epoch %.2f: %d/%d held-out training rows right (%.1f%%); best %.1f%% at step %s",
                      entry["epoch"], entry["holdout_correct"], len(verdicts), 100 * value, 100 * state.best_metric,
                      state.best_global_step)
            if waited >= cfg.SFT_PATIENCE:
                _LOG.info("no better held-out score for %d epoch(s) (SFT_PATIENCE=%d): stopping", waited, cfg.SFT_PATIENCE)
                control.should_training_stop = True

    return EpochRule()


def restore_best(trainer: Any) -> dict[str, Any]:
    """Put the best epoch's weights back into ``trainer.model`` when a later epoch scored lower,
    with transformers' own loader of a best checkpoint (adapter or whole model, sharded or not);
    returns the choice for the stage's record."""
    state = trainer.state
    scores = [entry for entry in state.log_history if SCORE in entry]
    chosen = next((entry for entry in scores if entry["step"] == state.best_global_step), None)
    choice = {"curve": [{key: entry[key] for key in ("epoch", "step", SCORE, "holdout_correct", "holdout_n")} for entry in scores],
              "chosen_epoch": chosen["epoch"] if chosen else None, "chosen_step": state.best_global_step,
              "best_checkpoint": state.best_model_checkpoint, "stopped_early": None}
    if not scores:
        return choice
    choice["stopped_early"] = state.global_step < state.max_steps
    if chosen is None or state.best_global_step == state.global_step:
        return choice
    if state.best_model_checkpoint is None:
        # the best epoch's checkpoint is gone (removed by hand): keep the last weights, saying so
        _LOG.warning("the best epoch's checkpoint (step %s) is missing: keeping the last epoch's weights", state.best_global_step)
        choice["chosen_epoch"], choice["chosen_step"] = scores[-1]["epoch"], scores[-1]["step"]
        return choice
    _LOG.info("restoring epoch %s (step %d, %.1f%% of the held-out rows) from %s", chosen["epoch"], chosen["step"],
              100 * chosen[SCORE], state.best_model_checkpoint)
    trainer._load_best_model()  # transformers' loader; tests/test_epoch_choice.py pins that it is there
    return choice


def card_text(choice: dict[str, Any]) -> str:
    """"epoch 2 of 3 by 40 held-out training rows (20.0%, 30.0%, 27.5%)" for the model card."""
    curve_text = ", ".join(f"{100 * entry[SCORE]:.1f}%" for entry in choice["curve"])
    held = choice["curve"][0]["holdout_n"] if choice["curve"] else 0
    last = choice["curve"][-1]["epoch"] if choice["curve"] else None
    return f"epoch {choice['chosen_epoch']:g} of {last:g} by {held} held-out training rows ({curve_text})" if last else "no epoch scored"

"""The model the app serves: an exported merged model as it is, else the latest trained stage
whose weights load (GRPO, then SFT) on the configured base (NF4 under LOAD_IN_4BIT), else the
base. ``load_best`` takes the loader to call, so the app passes its cached one and the
rehearsal (finreason.rehearsal) the plain ``models.load_model``: one choice, two callers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finreason import export, models, training
from finreason.layout import TRAINED_STAGES, Layout

Loader = Callable[[str | None], models.LoadedModel]


def weights_candidates(cfg: Any) -> list[tuple[str, str]]:
    """(stage, folder) of the trained weights present, best (latest stage) first."""
    where = Layout.of(cfg)
    found = [(stage, where.weights(stage)) for stage in reversed(TRAINED_STAGES)]
    return [(stage, str(folder)) for stage, folder in found if folder is not None]


def load_best(cfg: Any, load: Loader | None = None) -> tuple[models.LoadedModel, str, list[str]]:
    """(model, what it is in words, notes on weights skipped or stale); ``load(weights)`` loads
    the base with those weights (None: the base alone), ``models.load_model`` by default."""
    if load is None:
        def load(weights: str | None) -> models.LoadedModel:
            return models.load_model(cfg, weights=weights)
    exported = export.exported_from(cfg.MODEL_NAME)
    if exported:
        # a model 08_export.py wrote already holds its trained weights: nothing goes on top
        return load(None), f"exported {str(exported.get('stage')).upper()} model, merged", []
    # weights trained from since-replaced weights still load, with a warning saying so
    notes = [f"{stage.upper()} weights are stale: {reason}" for stage, reason in training.stale_weights(Layout.of(cfg)).items()]
    for stage, folder in weights_candidates(cfg):
        try:
            loaded = load(folder)
        except models.ModelError as error:
            notes.append(f"{stage.upper()} weights at {folder} skipped: {error}")
            continue
        return loaded, f"{stage.upper()} {loaded.info.get('weights_kind')} ({folder})", notes
    return load(None), "base model, no trained weights (train them with 04_train_sft.py)", notes

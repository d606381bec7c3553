"""The search space of `edgepipe search`: which knobs a config exposes, sampling them into a derived Config.

A knob is searched when its stage is in the config, or when it is set explicitly in [search] (then the
stage is added with its defaults). `calibration` is always searched (every build quantizes); the fine-tuning
`learning_rate` and `epochs` apply to every compression stage present. A sampled sparsity of 0 means no
pruning at all.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import (
    BudgetSection,
    CalibrationMethod,
    Config,
    DecomposeSection,
    DistillSection,
    PruneSection,
    SearchSection,
)
from pipeline.errors import UsageError

if TYPE_CHECKING:
    import optuna

KNOBS = ("width", "sparsity", "rank_ratio", "calibration", "learning_rate", "epochs")
SPARSITY_STEP = 0.05


@dataclass(frozen=True)
class Space:
    """The knobs to sample and the config they are applied to (stages added for declared knobs)."""

    base: Config
    knobs: tuple[str, ...]

    @property
    def section(self) -> SearchSection:
        return self.base.search


def plan(config: Config) -> Space:
    """The search space of a config; a knob that cannot apply raises UsageError."""
    s = config.search
    declared = s.model_fields_set
    distill, prune, decompose = config.distill, config.prune, config.decompose
    knobs: list[str] = []
    if distill is not None and not distill.student.startswith("width:") and "width" in declared:
        raise UsageError(f"{config.name}: search.width needs distill.student = 'width:<number>', "
                         f"not a student model file ({distill.student})")
    if "width" in declared or (distill is not None and distill.student.startswith("width:")):
        distill = distill or DistillSection()
        knobs.append("width")
    if prune is not None or "sparsity" in declared:
        prune = prune or PruneSection()
        knobs.append("sparsity")
    if decompose is not None or "rank_ratio" in declared:
        decompose = decompose or DecomposeSection()
        knobs.append("rank_ratio")
    knobs.append("calibration")
    has_stage = any(x is not None for x in (distill, prune, decompose))
    for knob in ("learning_rate", "epochs"):
        if has_stage:
            knobs.append(knob)
        elif knob in declared:
            raise UsageError(f"{config.name}: search.{knob}: the config has no [distill], [prune] or "
                             "[decompose] stage to fine-tune")
    base = config.model_copy(update={"distill": distill, "prune": prune, "decompose": decompose})
    return Space(base, tuple(knobs))


def _with(section: Any, **changes: Any) -> Any:
    """A validated copy of a config section (model_copy alone would not validate the new values)."""
    return type(section).model_validate({**section.model_dump(), **changes})


def sample(trial: optuna.Trial | optuna.trial.FixedTrial, space: Space) -> Config:
    """Suggest every knob of the space on `trial`; the derived config of this trial."""
    s, cfg = space.section, space.base
    distill, prune, decompose = cfg.distill, cfg.prune, cfg.decompose
    if "width" in space.knobs and distill is not None:
        width = trial.suggest_float("width", *s.width)
        distill = _with(distill, student=f"width:{width:.6g}")
    if "sparsity" in space.knobs and prune is not None:
        sparsity = trial.suggest_float("sparsity", s.sparsity[0], s.sparsity[1], step=_step(s.sparsity))
        prune = _with(prune, sparsity=round(sparsity, 6)) if sparsity >= SPARSITY_STEP / 2 else None
    if "rank_ratio" in space.knobs and decompose is not None:
        decompose = _with(decompose, rank_ratio=trial.suggest_float("rank_ratio", *s.rank_ratio))
    method = trial.suggest_categorical("calibration", [m.value for m in s.calibration])
    quantize = _with(cfg.quantize, calibration=CalibrationMethod(method))
    if "learning_rate" in space.knobs:
        lr = trial.suggest_float("learning_rate", *s.learning_rate, log=True)
        epochs = trial.suggest_int("epochs", *s.epochs)
        distill = distill and _with(distill, learning_rate=lr, epochs=epochs)
        prune = prune and _with(prune, learning_rate=lr, epochs=epochs)
        decompose = decompose and _with(decompose, learning_rate=lr, epochs=epochs)
    return cfg.model_copy(update={"distill": distill, "prune": prune, "decompose": decompose,
                                  "quantize": quantize})


def _step(bounds: tuple[float, float]) -> float | None:
    """Sparsity moves in steps of 0.05 (so 0, no pruning, can be drawn) when the range allows it."""
    lo, hi = bounds
    n = (hi - lo) / SPARSITY_STEP
    return SPARSITY_STEP if hi > lo and abs(n - round(n)) < 1e-9 else None


def derive(space: Space, params: dict[str, Any]) -> Config:
    """The config of a recorded trial, from its params (to rebuild it elsewhere)."""
    import optuna

    return sample(optuna.trial.FixedTrial(params), space)


def trial_budget(config: Config) -> Config:
    """A trial's build skips the accuracy-aware re-exports (they would override the calibration knob and cost
    up to 8 exports): the search judges max_accuracy_drop itself, as a constraint."""
    b = config.budget
    return config.model_copy(update={"budget": BudgetSection(max_latency_ms=b.max_latency_ms,
                                                             max_size_kb=b.max_size_kb)})


def coarse(config: Config, fraction: float, data_path: Path | None) -> Config:
    """The cheap evaluation: epochs scaled by `fraction` (at least 1 where there were any) and, for an npz
    config, the training subset at `data_path`."""
    def fewer(epochs: int) -> int:
        return 0 if epochs == 0 else max(1, math.ceil(epochs * fraction))

    update: dict[str, Any] = {}
    for name in ("distill", "prune", "decompose"):
        sec = getattr(config, name)
        if sec is not None:
            update[name] = _with(sec, epochs=fewer(sec.epochs))
    if data_path is not None and config.data is not None:
        update["data"] = _with(config.data, path=str(data_path))
    return config.model_copy(update=update)


def write_training_subset(config: Config, fraction: float, dest: Path, seed: int) -> Path | None:
    """A stratified `fraction` of the training split (test split kept whole) as an npz at `dest`; None when
    the config's data is not an npz file (image folders and built-in examples get fewer epochs only)."""
    from pipeline.inputs.data import read_npz

    if config.data is None or config.data.path is None or fraction >= 1:
        return None
    if dest.is_file():
        return dest
    from pipeline.inputs.holdout import with_validation

    # the validation split every trial is judged on: the same one a full build of this config holds out
    raw = with_validation(read_npz(config.resolve(config.data.path)), config.quantize.seed,
                          config.metric.output if config.metric is not None else None)
    rng = np.random.default_rng(seed)
    y = np.asarray(raw.y_train)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if y.ndim == 1 else [np.arange(len(y))]
    picks = [rng.permutation(g)[:max(1, math.ceil(len(g) * fraction))] for g in groups]
    keep = np.sort(np.concatenate(picks))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}-{os.getpid()}.npz")
    arrays: dict[str, Any] = {}
    for key, value, sub in (("x_train", raw.x_train, keep), ("y_train", raw.y_train, keep),
                            ("x_test", raw.x_test, slice(None)), ("y_test", raw.y_test, slice(None)),
                            ("x_val", raw.x_val, slice(None)), ("y_val", raw.y_val, slice(None))):
        named = value if isinstance(value, dict) else {"": value}
        arrays.update({f"{key}.{k}" if k else key: np.asarray(v)[sub] for k, v in named.items()})
    np.savez(tmp, **arrays)
    os.replace(tmp, dest)
    return dest


"""Runs the compression stages in order, each cached by content hash, each measured."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import interrupts
from pipeline.cache import Cache, cache_key
from pipeline.compress.base import StageContext, TrainData
from pipeline.compress.cost import count_macs, count_params, float_size_bytes
from pipeline.config import Config
from pipeline.errors import UsageError
from pipeline.inputs.arrays import PREDICT_BATCH, predict_batches
from pipeline.inputs.dict_io import flat_outputs
from pipeline.inputs.infer import infer
from pipeline.inputs.models import metric_value, predict_named
from pipeline.report.schema import StageEntry
from pipeline.ui import UI
from targets import runner

if TYPE_CHECKING:
    import keras

    from pipeline.inputs.source import Source


class _KerasSession(runner.Session):
    runtime = "keras"

    def __init__(self, model: keras.Model) -> None:
        import tensorflow as tf

        self.fn = tf.function(lambda x: model(x, training=False))

    def run(self, x: Any) -> np.ndarray:
        return flat_outputs(self.fn(x))[0]


def model_outputs(model: keras.Model, x: Any, output: int = 0) -> np.ndarray:
    """The Keras model's outputs (number `output` of several) on a split, a batch at a time for lazy data."""
    def predict(b: Any) -> np.ndarray:
        return flat_outputs(infer(model, b, PREDICT_BATCH))[output]

    return predict_named(predict, x) if isinstance(x, dict) else predict_batches(predict, x)


def model_metrics(model: keras.Model, data: TrainData, metric: str = "accuracy", output: int = 0,
                  outputs: np.ndarray | None = None, split: str = "test", value: float | None = None,
                  ) -> dict[str, Any]:
    """params, MACs, float32 weight bytes, the metric on `split` ("test" or "val") of output number `output`
    (models with several; `outputs`: the model's outputs there, when already predicted; `value`: the metric,
    when already computed), float latency here."""
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    first = {k: np.asarray(v[:1]) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x[:1])
    stats, _ = runner.measure(_KerasSession(model), first, warmup=5, iterations=30)
    if value is None:
        pred = outputs if outputs is not None else model_outputs(model, x, output)
        value = metric_value(pred, y, metric, x)
    return {"accuracy": value, "params": count_params(model), "macs": count_macs(model),
            "size_bytes": float_size_bytes(model), "latency_ms": round(stats["median"], 4)}


def _record(outcome: StageOutcome, name: str, model: keras.Model, data: TrainData, metric: str,
            extra: dict[str, Any]) -> None:
    """A stage's entry, measured on the validation split (never the test split: stages are not shipped);
    `extra`: what the stage did (seconds, cached, notes, details: widths, ranks, sparsity ...)."""
    val_outputs = model_outputs(model, data.x_val) if data.x_val is not None else None
    split = "val" if data.x_val is not None else "test"
    outcome.entries.append(StageEntry.model_validate({
        "name": name, "path": f"stages/{name}/model.keras",
        **model_metrics(model, data, metric, outputs=val_outputs, split=split),
        "split": "validation" if split == "val" else "test", **extra}))
    outcome.val_outputs.append(val_outputs)


@dataclass
class StageOutcome:
    model: keras.Model
    model_id: str
    entries: list[StageEntry] = field(default_factory=list)
    keras_path: Path | None = None
    val_outputs: list[np.ndarray | None] = field(default_factory=list)  # each stage's outputs on the validation split


def run_stages(config: Config, src: Source, run_dir: Path, cache: Cache, ui: UI) -> StageOutcome | None:
    """Apply every configured stage to the reference model of `src`, trained on its data as its metric's labels
    say (`StageContext.labels`) and measured by its metric; None when there is no stage."""
    import keras

    teacher, model_id, data, data_id = src.reference.keras_model, src.model_id, src.data, src.data_id
    metric, labels = src.metric.spec, src.metric.labels.value
    if config.distill is None and config.prune is None and config.decompose is None:
        return None
    from pipeline.compress import build_stages

    stages = build_stages(config)
    if teacher is None:
        raise UsageError("compression stages ([distill], [prune], [decompose]) need a Keras model "
                         "(.keras or .h5); a SavedModel can only be quantized")
    ctx = StageContext(data=data, teacher=teacher, seed=config.quantize.seed, labels=labels,
                       progress_callbacks=ui.keras_callbacks)
    outcome = StageOutcome(teacher, model_id)
    for stage in stages:
        interrupts.check()
        key = cache_key("stage", stage.name, stage.version, stage.config_dict(), outcome.model_id, data_id,
                        config.quantize.seed)
        t0 = time.perf_counter()
        hit = cache.get(key)
        cached = hit is not None
        notes: list[str] = []
        if hit is None:
            ui.info(f"stage {stage.name}: running")
            result = stage.run(outcome.model, ctx)
            interrupts.check()  # a stage interrupted mid-training is never cached
            notes = list(result.notes)
            with tempfile.TemporaryDirectory() as tmp:
                result.model.save(Path(tmp) / "model.keras")
                (Path(tmp) / "notes.txt").write_text("\n".join(notes))
                (Path(tmp) / "details.json").write_text(json.dumps(result.details, default=str))
                hit = cache.put(key, Path(tmp))
        else:
            ui.info(f"stage {stage.name}: reused from cache ({key[:12]})")
            notes = [n for n in (hit / "notes.txt").read_text().splitlines() if n]
        details = json.loads((hit / "details.json").read_text()) if (hit / "details.json").is_file() else {}
        seconds = time.perf_counter() - t0
        model = keras.saving.load_model(hit / "model.keras", compile=False)
        dest = run_dir / "stages" / stage.name / "model.keras"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((hit / "model.keras").read_bytes())
        _record(outcome, stage.name, model, data, metric, {"seconds": round(seconds, 3), "cached": cached,
                                                           "notes": notes, "details": details})
        outcome.model, outcome.model_id, outcome.keras_path = model, key, dest
    return outcome

"""The equalized float model every target exports from (pipeline.quantize.equalize), cached by the source
model's id, the calibration set and the algorithm's version; its id is that cache key, so every export from
it is cached apart from the exports of the model it came from."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration import CalibrationSet
from pipeline.cache import Cache, cache_key
from pipeline.ui import UI
from targets import FloatModel

RESULT = "cle.json"


@dataclass(frozen=True)
class EqualizedModel:
    """An equalized float model, its id for export cache keys, and what was done (segment records)."""

    model: FloatModel
    model_id: str
    segments: tuple[dict[str, Any], ...]

    def summary(self) -> str:
        before = max(s["spread_before"] for s in self.segments)
        after = max(s["spread_after"] for s in self.segments)
        return (f"cross-layer equalization (Keras): {len(self.segments)} layer pair(s); widest channel range "
                f"/ median {before:.1f} -> {after:.1f}")


def _write(model: FloatModel, calib: CalibrationSet, folder: Path) -> list[dict[str, Any]]:
    import keras

    from pipeline.quantize.equalize import equalize

    assert model.keras_path is not None
    source = keras.saving.load_model(model.keras_path, compile=False)
    if isinstance(calib.samples, dict):
        raise TypeError("Keras equalization takes models with one input")
    equalized, done = equalize(source, calib.samples.astype("float32"))
    records = [d.to_dict() for d in done]
    if records:
        equalized.save(folder / "model.keras")
        equalized.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    (folder / RESULT).write_text(json.dumps(records))
    return records


def _from_entry(entry: Path, key: str, shape: tuple[int, ...]) -> EqualizedModel | None:
    records = json.loads((entry / RESULT).read_text())
    if not records:
        return None
    return EqualizedModel(FloatModel(entry / "saved_model", entry / "model.keras", shape), key, tuple(records))


def equalized_model(model: FloatModel, model_id: str, calib: CalibrationSet, cache: Cache,
                    ui: UI) -> tuple[EqualizedModel | None, str | None]:
    """(the equalized model, None), or (None, why not): no .keras file, or no layer pair it could equalize."""
    from pipeline.quantize.equalize import VERSION

    if model.keras_path is None:
        return None, "no Keras model (a SavedModel input): cross-layer equalization skipped"
    key = cache_key("equalize", VERSION, model_id, calib.fingerprint())
    hit = cache.get(key)
    if hit is None:
        with tempfile.TemporaryDirectory(prefix="edgepipe-cle-") as tmp, \
                ui.task("cross-layer equalization (Keras)"):
            try:
                _write(model, calib, Path(tmp))
            except Exception as err:  # a model the channel analysis or the loader cannot take
                return None, f"cross-layer equalization skipped ({type(err).__name__}: {err})"
            hit = cache.put(key, Path(tmp))
    found = _from_entry(hit, key, model.input_shape)
    return (found, None) if found is not None else (None, "no layer pair to equalize")

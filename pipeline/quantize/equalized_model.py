"""The equalized float model every target exports from, by one of two methods: SmoothQuant-style activation-
to-weight migration (pipeline.quantize.smoothquant) or Nagel et al.'s cross-layer equalization
(pipeline.quantize.cle). Cached by the source model's id, the method, the calibration set and the method's
version; its id is that cache key, so every export from it is cached apart from the exports of the model it
came from."""

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

RESULT = "equalized.json"
SMOOTHQUANT = "smoothquant"
CLE = "cle"
METHODS = (SMOOTHQUANT, CLE)
NAMES = {SMOOTHQUANT: "SmoothQuant-style activation-to-weight migration (Xiao et al. 2023, alpha 0.5)",
         CLE: "cross-layer equalization (Nagel et al. 2019) with high-bias absorption"}
SHORT = {SMOOTHQUANT: "SmoothQuant migration", CLE: "cross-layer equalization"}


@dataclass(frozen=True)
class EqualizedModel:
    """An equalized float model, its id for export cache keys, the method, and what was done (pair records)."""

    model: FloatModel
    model_id: str
    method: str  # SMOOTHQUANT | CLE
    segments: tuple[dict[str, Any], ...]

    def summary(self) -> str:
        if self.method == SMOOTHQUANT:
            before = max(s["spread_before"] for s in self.segments)
            after = max(s["spread_after"] for s in self.segments)
            return (f"{NAMES[SMOOTHQUANT]} (Keras): {len(self.segments)} layer pair(s); widest activation channel "
                    f"range / median {before:.1f} -> {after:.1f}")
        before = max(max(s["head_spread_before"], s["tail_spread_before"]) for s in self.segments)
        after = max(max(s["head_spread_after"], s["tail_spread_after"]) for s in self.segments)
        absorbed = sum(int(s["absorbed"]) for s in self.segments)
        return (f"{NAMES[CLE]} (Keras): {len(self.segments)} layer pair(s); widest weight channel range / median "
                f"{before:.1f} -> {after:.1f}; {absorbed} high bias(es) absorbed")

    def entry(self) -> dict[str, Any]:
        """The report's target `equalization` entry."""
        return {"method": self.method, "name": NAMES[self.method], "pairs": list(self.segments)}


def _write(model: FloatModel, calib: CalibrationSet, method: str, folder: Path) -> list[dict[str, Any]]:
    import keras

    from pipeline.quantize import cle, smoothquant

    assert model.keras_path is not None
    source = keras.saving.load_model(model.keras_path, compile=False)
    if isinstance(calib.samples, dict):
        raise TypeError("Keras equalization takes models with one input")
    run = smoothquant.migrate if method == SMOOTHQUANT else cle.equalize
    equalized, done = run(source, calib.samples.astype("float32"))
    records = [d.to_dict() for d in done]
    if records:
        equalized.save(folder / "model.keras")
        equalized.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    (folder / RESULT).write_text(json.dumps(records))
    return records


def _from_entry(entry: Path, key: str, method: str, shape: tuple[int, ...]) -> EqualizedModel | None:
    records = json.loads((entry / RESULT).read_text())
    if not records:
        return None
    return EqualizedModel(FloatModel(entry / "saved_model", entry / "model.keras", shape), key, method,
                          tuple(records))


def equalized_model(model: FloatModel, model_id: str, calib: CalibrationSet, cache: Cache, ui: UI,
                    method: str = SMOOTHQUANT) -> tuple[EqualizedModel | None, str | None]:
    """(the model equalized by `method`, None), or (None, why not): no .keras file, or no layer pair."""
    from pipeline.quantize import cle, smoothquant

    name = NAMES[method]
    if model.keras_path is None:
        return None, f"no Keras model (a SavedModel input): {name} skipped"
    version = smoothquant.VERSION if method == SMOOTHQUANT else cle.VERSION
    key = cache_key("equalize", method, version, model_id, calib.fingerprint())
    hit = cache.get(key)
    if hit is None:
        with tempfile.TemporaryDirectory(prefix="edgepipe-equalize-") as tmp, ui.task(f"{name} (Keras)"):
            try:
                _write(model, calib, method, Path(tmp))
            except Exception as err:  # a model the channel analysis or the loader cannot take
                return None, f"{name} skipped ({type(err).__name__}: {err})"
            hit = cache.put(key, Path(tmp))
    found = _from_entry(hit, key, method, model.input_shape)
    return (found, None) if found is not None else (None, f"{name}: no layer pair to equalize")

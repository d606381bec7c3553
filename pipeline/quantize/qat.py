"""Quantization-aware fine-tuning (QAT) of a classifier in Keras 3, cached like the other stages.

The float model's logits copy gets fake quantization (pipeline.quantize.fake_quant) in one target's scheme,
its activation ranges start at the calibration set's min/max, and it fine-tunes a few epochs with the float
model as the distilling teacher (pipeline.compress.training's distillation loss). The result is a plain float
model whose weights sit on their per-channel int8 grid, and the learned activation ranges
(calibration.learned.LearnedRange, each with its tensor's statistics on the calibration set): the export
(ExportOptions.activation_ranges) quantizes every tensor they match with them, the rest as calibrated."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration import CalibrationSet
from calibration.learned import LearnedRange, Signatures
from pipeline.cache import Cache, cache_key
from pipeline.ui import UI
from targets import FloatModel, get_target

VERSION = "4"  # 4: LSQ-style range gradients; 3: averaging and Add outputs quantized; 2: learned ranges with their signatures
RESULT = "qat.json"


@dataclass(frozen=True)
class QatConfig:
    epochs: int = 5
    learning_rate: float = 1e-3
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0


@dataclass(frozen=True)
class QatInputs:
    """What the accuracy-aware ladder needs for QAT: x_train, y_train (class labels), x_eval, y_eval."""

    data: tuple[np.ndarray, ...]
    config: QatConfig = QatConfig()
    first: bool = False  # [quantize] qat = true: right after the first export, preferred when it passes
    unavailable: str | None = None  # why QAT cannot run on this task (then `data` is empty)


@dataclass(frozen=True)
class QatModel:
    """The fine-tuned float model, its id for export cache keys, the learned ranges, Keras accuracy before/after."""

    model: FloatModel
    model_id: str
    ranges: tuple[LearnedRange, ...]
    fake_quant_accuracy_before: float
    fake_quant_accuracy_after: float
    epochs: int

    def summary(self) -> str:
        return (f"quantization-aware fine-tuning (Keras): fake-quantized accuracy {self.fake_quant_accuracy_before:.4f}"
                f" -> {self.fake_quant_accuracy_after:.4f}; {len(self.ranges)} activation range(s) learned")


def initial_ranges(logits: Any, samples: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min/max on the calibration samples of every output a backend quantizes (fake_quant.quantized_outputs)."""
    import keras

    from pipeline.quantize.fake_quant import quantized_outputs

    final = logits.layers[-1].name
    names = [layer.name for layer in logits.layers if quantized_outputs(layer, final)]
    outs = keras.Model(logits.inputs, [logits.get_layer(n).output for n in names]).predict(samples, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return {n: (float(v.min()), float(v.max())) for n, v in zip(names, outs, strict=True)}


def learned_ranges(plain: Any, ranges: dict[str, tuple[float, float]], calib: np.ndarray,
                   symmetric: bool) -> list[LearnedRange]:
    """Each learned range with the signature of its layer's output in the plain (logits) model on `calib`."""
    import keras

    names = list(ranges)
    outs = keras.Model(plain.inputs, [plain.get_layer(n).output for n in names]).predict(calib, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    signatures = Signatures()
    for name, values in zip(names, outs, strict=True):
        for v in values:
            signatures.add(name, v)
    found = signatures.values()
    return [LearnedRange(n, *ranges[n], symmetric, found[n]) for n in names if n in found]


def fine_tune(model: Any, x: np.ndarray, y: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
              calib: np.ndarray, symmetric: bool, cfg: QatConfig, levels: int = 255) -> tuple[Any, dict[str, Any]]:
    """QAT of a Keras classifier: (the plain fine-tuned model in the input's output convention, a record)."""
    import keras

    from pipeline.compress.training import (
        distillation_loss,
        is_softmax_output,
        label_accuracy,
        logits_model,
        with_output_convention,
    )
    from pipeline.quantize.fake_quant import learned, qat_model

    keras.utils.set_random_seed(cfg.seed)
    logits = logits_model(model)
    q = qat_model(logits, initial_ranges(logits, calib), symmetric, levels)
    packed = np.concatenate([y.reshape(-1, 1).astype(np.float32), logits.predict(x, verbose=0)], axis=1)
    q.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
              loss=distillation_loss(cfg.temperature, cfg.alpha), metrics=[label_accuracy], jit_compile=False)
    before = _accuracy(q, x_eval, y_eval)
    q.fit(x, packed, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0)
    after = _accuracy(q, x_eval, y_eval)
    plain, ranges = learned(q)
    found = [asdict(r) for r in learned_ranges(plain, ranges, calib, symmetric)]
    record = {"ranges": found, "fake_quant_accuracy_before": before, "fake_quant_accuracy_after": after,
              "symmetric": symmetric, "epochs": cfg.epochs}
    return with_output_convention(plain, is_softmax_output(model)), record


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y.reshape(-1)))


def _write(model: FloatModel, data: tuple[np.ndarray, ...], calib: CalibrationSet, symmetric: bool,
           levels: int, cfg: QatConfig, folder: Path) -> None:
    import keras

    assert model.keras_path is not None
    source = keras.saving.load_model(model.keras_path, compile=False)
    if any(isinstance(layer, keras.layers.RNN) for layer in source.layers):
        raise ValueError("recurrent layers: the fake quantization covers Conv2D and Dense only")
    if isinstance(calib.samples, dict):
        raise ValueError("several inputs: QAT fine-tunes models with one input")
    x, y, x_eval, y_eval = data
    tuned, record = fine_tune(source, x, y, x_eval, y_eval, calib.samples.astype(np.float32), symmetric, cfg, levels)
    tuned.save(folder / "model.keras")
    tuned.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    (folder / RESULT).write_text(json.dumps(record))


def qat_model_for(target: str, model: FloatModel, model_id: str, data: tuple[np.ndarray, ...],
                  calib: CalibrationSet, cache: Cache, ui: UI,
                  cfg: QatConfig = QatConfig()) -> tuple[QatModel | None, str | None]:
    """(the fine-tuned model for `target`'s scheme, None) or (None, why not). `data`: x_train, y_train (class
    labels), x_eval, y_eval. Cached by the model's id, the data, the calibration set, the scheme and cfg."""
    if model.keras_path is None:
        return None, ("quantization-aware fine-tuning skipped: no Keras model file (a SavedModel input, or a "
                      "recurrent model unrolled for export)")
    scheme = get_target(target)  # the target's int8 scheme: symmetric activations, weight levels
    symmetric, levels = scheme.symmetric_activations, scheme.weight_levels
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in data)).hexdigest()
    key = cache_key("qat", VERSION, model_id, calib.fingerprint(), digest, str(symmetric), levels, repr(cfg))
    hit = cache.get(key)
    if hit is None:
        with tempfile.TemporaryDirectory(prefix="edgepipe-qat-") as tmp, \
                ui.task(f"quantization-aware fine-tuning (Keras, {'symmetric' if symmetric else 'asymmetric'})"):
            try:
                _write(model, data, calib, symmetric, levels, cfg, Path(tmp))
            except Exception as err:  # a layer the fake quantization or the loader cannot take
                return None, f"quantization-aware fine-tuning skipped ({type(err).__name__}: {err})"
            hit = cache.put(key, Path(tmp))
    rec = json.loads((hit / RESULT).read_text())
    ranges = tuple(LearnedRange.from_dict(r) for r in rec["ranges"])
    return QatModel(FloatModel(hit / "saved_model", hit / "model.keras", model.input_shape), key, ranges,
                    rec["fake_quant_accuracy_before"], rec["fake_quant_accuracy_after"], int(rec["epochs"])), None

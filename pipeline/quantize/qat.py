"""Quantization-aware fine-tuning (QAT) of a classifier in Keras 3, cached like the other stages.

The float model's logits copy gets fake quantization (pipeline.quantize.fake_quant) in one target's scheme:
every kernel of every layer kind that target quantizes to int8, on that target's grid (weight_quant: which
layers, which grid, and the reason for each weighted layer left out), its activation ranges start at the
calibration set's min/max, and it fine-tunes a few epochs with the float model as the distilling teacher
(pipeline.compress.training's distillation loss). The result is a plain float model whose weights sit on
their int8 grid, and the learned activation ranges
(calibration.learned.LearnedRange, each with its tensor's statistics on the calibration set): the export
(ExportOptions.activation_ranges) quantizes every tensor they match with them, the rest as calibrated."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calibration import CalibrationSet
from calibration.learned import LearnedRange, Signatures
from pipeline.cache import cache_key
from pipeline.quantize.export import ExportRequest
from targets import FloatModel, get_target
from targets.base import WEIGHT_KINDS, weight_grid

if TYPE_CHECKING:
    from pipeline.quantize.weight_quant import Grids

VERSION = "5"  # 5: every layer kind on the target's grid, linear outputs, ranges on the grid; 4: LSQ-style range gradients
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
class Scheme:
    """The int8 scheme QAT trains for one target: symmetric activations or not, and per weight kind its grid
    (levels, per tensor) or why the target keeps that kind in float."""

    symmetric: bool
    grids: Grids


@dataclass(frozen=True)
class QatInputs:
    """What the accuracy-aware ladder needs for QAT: x_train, y_train (class labels), x_val, y_val (the validation
    split: QAT trains on the training split, its before/after is judged on the validation split)."""

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
    fake_quantized: tuple[dict[str, Any], ...] = ()  # per layer: its kernels and their grid
    not_fake_quantized: tuple[dict[str, Any], ...] = ()  # per weighted layer left out: the reason

    def summary(self) -> str:
        left = f", {len(self.not_fake_quantized)} not (see the report's qat entry)" if self.not_fake_quantized else ""
        return (f"quantization-aware fine-tuning (Keras): fake-quantized accuracy {self.fake_quant_accuracy_before:.4f}"
                f" -> {self.fake_quant_accuracy_after:.4f}; {len(self.ranges)} activation range(s) learned; "
                f"{len(self.fake_quantized)} weighted layer(s) fake-quantized{left}")

    def layers_entry(self) -> dict[str, Any]:
        """The report's per-layer lists: every layer fake-quantized (kernels, grid) and every one not (reason)."""
        return {"fake_quantized": list(self.fake_quantized), "not_fake_quantized": list(self.not_fake_quantized)}


def initial_ranges(logits: Any, samples: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min/max on the calibration samples of every output a backend quantizes (fake_quant.quantized_outputs)."""
    import keras

    from pipeline.quantize.fake_quant import quantized_names

    names = quantized_names(logits)
    outs = _outputs(keras.Model(logits.inputs, [logits.get_layer(n).output for n in names]), samples)
    return {n: (float(v.min()), float(v.max())) for n, v in zip(names, outs, strict=True)}


def learned_ranges(plain: Any, ranges: dict[str, tuple[float, float]], calib: np.ndarray,
                   symmetric: bool) -> list[LearnedRange]:
    """Each learned range with the signature of its layer's output in the plain (logits) model on `calib`."""
    import keras

    names = list(ranges)
    outs = _outputs(keras.Model(plain.inputs, [plain.get_layer(n).output for n in names]), calib)
    signatures = Signatures()
    for name, values in zip(names, outs, strict=True):
        for v in values:
            signatures.add(name, v)
    found = signatures.values()
    return [LearnedRange(n, *ranges[n], symmetric, found[n]) for n in names if n in found]


def fine_tune(model: Any, data: tuple[np.ndarray, ...], calib: np.ndarray, scheme: Scheme,
              cfg: QatConfig) -> tuple[Any, dict[str, Any]]:
    """QAT of a Keras classifier on `data` (x, y, x_eval, y_eval) with the calibration samples `calib`: (the plain
    fine-tuned model in the input's output convention, a record)."""
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
    x, y, x_eval, y_eval = data
    symmetric = scheme.symmetric
    logits = logits_model(model)
    q, planned, done, skipped = qat_model(logits, initial_ranges(logits, calib), symmetric, scheme.grids)
    packed = np.concatenate([y.reshape(-1, 1).astype(np.float32), _outputs(logits, x)[0]], axis=1)
    q.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
              loss=distillation_loss(cfg.temperature, cfg.alpha), metrics=[label_accuracy], jit_compile=False)
    before = _accuracy(q, x_eval, y_eval)
    q.fit(x, packed, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0)
    after = _accuracy(q, x_eval, y_eval)
    plain, ranges = learned(q, planned)
    found = [asdict(r) for r in learned_ranges(plain, ranges, calib, symmetric)]
    record = {"ranges": found, "fake_quant_accuracy_before": before, "fake_quant_accuracy_after": after,
              "symmetric": symmetric, "epochs": cfg.epochs, "fake_quantized": done, "not_fake_quantized": skipped}
    return with_output_convention(plain, is_softmax_output(model)), record


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(_outputs(model, x)[0], axis=-1) == y.reshape(-1)))


def _outputs(model: Any, x: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    """Each of the model's outputs on x (pipeline.inputs.infer: eagerly where x is small)."""
    from pipeline.inputs.infer import infer

    outs = infer(model, x, batch)
    return [np.asarray(o) for o in outs] if isinstance(outs, list | tuple) else [np.asarray(outs)]


def _write(model: FloatModel, data: tuple[np.ndarray, ...], calib: CalibrationSet, scheme: Scheme, cfg: QatConfig,
           folder: Path) -> None:
    import keras

    assert model.keras_path is not None
    source = keras.saving.load_model(model.keras_path, compile=False)
    if isinstance(calib.samples, dict):
        raise ValueError("several inputs: QAT fine-tunes models with one input")
    tuned, record = fine_tune(source, data, calib.samples.astype(np.float32), scheme, cfg)
    tuned.save(folder / "model.keras")
    tuned.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    (folder / RESULT).write_text(json.dumps(record))


def target_scheme(target: str) -> Scheme:
    """The int8 scheme QAT trains for `target`, from the target registry: symmetric activations or not, and
    per weight kind its grid (levels, per tensor) or why the target keeps that kind in float."""
    scheme = get_target(target)
    grids: Grids = {}
    for kind in WEIGHT_KINDS:
        grid = weight_grid(scheme, kind)
        grids[kind] = grid if grid is not None else f"{target} keeps {kind} weights in float: {scheme.float_weights[kind]}"
    return Scheme(scheme.symmetric_activations, grids)


def qat_model_for(req: ExportRequest, data: tuple[np.ndarray, ...],
                  cfg: QatConfig = QatConfig()) -> tuple[QatModel | None, str | None]:
    """(the model `req.model` fine-tuned for target `req.name`'s scheme, None) or (None, why not). `data`: x_train,
    y_train (class labels), x_eval, y_eval. Cached by the model's id, the data, the calibration set, the scheme
    and cfg."""
    model, calib = req.model, req.calib
    if model.keras_path is None:
        return None, "quantization-aware fine-tuning skipped: no Keras model file (a SavedModel input)"
    scheme = target_scheme(req.name)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in data)).hexdigest()
    key = cache_key("qat", VERSION, req.model_id, calib.fingerprint(), digest, str(scheme.symmetric),
                    repr(sorted(scheme.grids.items())), repr(cfg))
    hit = req.cache.get(key)
    if hit is None:
        kind = "symmetric" if scheme.symmetric else "asymmetric"
        with tempfile.TemporaryDirectory(prefix="edgepipe-qat-") as tmp, \
                req.ui.task(f"quantization-aware fine-tuning (Keras, {kind})"):
            try:
                _write(model, data, calib, scheme, cfg, Path(tmp))
            except Exception as err:  # a layer the fake quantization or the loader cannot take
                return None, f"quantization-aware fine-tuning skipped ({type(err).__name__}: {err})"
            hit = req.cache.put(key, Path(tmp))
    rec = json.loads((hit / RESULT).read_text())
    ranges = tuple(LearnedRange.from_dict(r) for r in rec["ranges"])
    return QatModel(FloatModel(hit / "saved_model", hit / "model.keras", model.input_shape), key, ranges,
                    rec["fake_quant_accuracy_before"], rec["fake_quant_accuracy_after"], int(rec["epochs"]),
                    tuple(rec["fake_quantized"]), tuple(rec["not_fake_quantized"])), None

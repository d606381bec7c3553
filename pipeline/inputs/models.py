"""Loading models safely: .keras, legacy Keras 2 .h5, or a TF SavedModel directory."""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.cache import content_hash as hash_of
from pipeline.cache import keras_file_hash
from pipeline.errors import ModelLoadError
from pipeline.inputs import dict_io, legacy_h5, savedmodel_v1
from pipeline.inputs.arrays import PREDICT_BATCH, predict_batches
from pipeline.inputs.infer import infer

if TYPE_CHECKING:
    import keras

UNSAFE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
_KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp"}  # what Keras itself resolves classes from
_UNKNOWN_CLASS = re.compile(r"(?:Could not locate (?:class|function) |Unknown (?:layer|object|class)[^:]*: )'?([\w.>]+)")


class ModelFormat(str, Enum):
    KERAS = "keras"
    H5 = "h5"
    SAVED_MODEL = "saved_model"


@dataclass(frozen=True)
class LoadedModel:
    """A Keras model, or (for a SavedModel) only its directory: quantization works from either."""

    format: ModelFormat
    path: Path
    keras_model: keras.Model | None
    input_shape: tuple[int | None, ...]  # one sample, without batch
    num_classes: int
    content_hash: str
    notes: tuple[str, ...] = ()
    revived: Path | None = None  # a SavedModel TF 2 cannot load: its TF1-loader re-export, used in its place
    output_shape: tuple[int | None, ...] = ()  # one sample's output, without batch (the metric's, with several)
    output_names: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ()  # model order; npz keys x_train.<name> when there are several
    input_shapes: tuple[tuple[int | None, ...], ...] = ()
    output_shapes: tuple[tuple[int | None, ...], ...] = ()

    @property
    def several_inputs(self) -> bool:
        return len(self.input_names) > 1

    @property
    def several_outputs(self) -> bool:
        return len(self.output_names) > 1

    def for_output(self, index: int) -> LoadedModel:
        """This model judged on its output number `index`: output_shape and num_classes are that output's."""
        if not self.output_shapes:
            return self
        shape = self.output_shapes[index]
        return replace(self, output_shape=shape, num_classes=int(shape[-1] or 0) if shape else 1)

    @property
    def saved_model_dir(self) -> Path:
        """The SavedModel to convert and predict from: the user's directory, or its revived re-export."""
        return self.revived or self.path


def _keras_config(path: Path) -> Any:
    import json

    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, RecursionError) as err:
        raise ModelLoadError(f"{path}: not a valid .keras file ({err})") from None


def _serialized_objects(config: Any) -> list[dict[str, Any]]:
    """Every Keras 3 serialized object (a dict with class_name and module) in a stored config."""
    found: list[dict[str, Any]] = []
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("class_name"), str) and "module" in node:
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _is_builtin(module: Any) -> bool:
    return isinstance(module, str) and (module == "builtins" or module.split(".")[0] in _KERAS_PACKAGES)


def _unknown_custom_objects(config: Any) -> dict[str, str | None]:
    """Custom classes the stored config names that no Keras package provides and nothing has registered
    in this process: {shown name: module or None}. Keras cannot build them; it would fail deep inside."""
    import keras

    registered = keras.saving.get_custom_objects()
    unknown: dict[str, str | None] = {}
    for obj in _serialized_objects(config):
        name, module = obj["class_name"], obj.get("module")
        if name.startswith("__") or _is_builtin(module):
            continue
        reg = obj.get("registered_name")
        if (isinstance(reg, str) and reg in registered) or name in registered:
            continue
        shown = f"{name} (registered as '{reg}')" if isinstance(reg, str) and reg != name else name
        unknown[shown] = module if isinstance(module, str) else None
    return unknown


def _refuse_unknown_custom_objects(path: Path, config: Any, allow_unsafe: bool) -> None:
    unknown = _unknown_custom_objects(config)
    if unknown and allow_unsafe:  # the user trusts the file: import the modules that define its classes
        for module in sorted({m for m in unknown.values() if m}):
            try:
                if importlib.util.find_spec(module.split(".")[0]) is not None:
                    importlib.import_module(module)
            except Exception as err:
                msg = " ".join(str(err).split())[:200]
                raise ModelLoadError(f"{path}: importing {module} for its custom objects failed: "
                                     f"{type(err).__name__}: {msg}") from None
        unknown = _unknown_custom_objects(config)
    if unknown:
        names = ", ".join(sorted(unknown))
        hint = ("their code is not importable here (a class defined in a script cannot be loaded)"
                if allow_unsafe else "edgepipe runs no code from model files; pass --allow-unsafe-model to import "
                "the modules that define them, if you trust this file")
        raise ModelLoadError(f"{path}: the model uses unknown custom objects: {names}; {hint}")


def _refuse_unsafe(path: Path, classes: set[str], allow_unsafe: bool) -> None:
    bad = sorted(classes & UNSAFE_LAYERS)
    if bad and not allow_unsafe:
        raise ModelLoadError(
            f"{path}: refusing to load a model with {', '.join(bad)} layers (they run arbitrary code); "
            "pass --allow-unsafe-model if you trust this file"
        )


def _load_keras(path: Path, allow_unsafe: bool) -> tuple[keras.Model, tuple[str, ...]]:
    import keras

    notes: tuple[str, ...] = ()
    if path.suffix == ".keras":
        stored = _keras_config(path)
        _refuse_unsafe(path, legacy_h5.class_names(stored), allow_unsafe)
        _refuse_unknown_custom_objects(path, stored, allow_unsafe)
        return keras.saving.load_model(path, compile=False, safe_mode=not allow_unsafe), notes
    config = legacy_h5.read_config(path)
    if config is None:
        raise ModelLoadError(f"{path}: the .h5 file holds weights only, no model config")
    _refuse_unsafe(path, legacy_h5.class_names(config), allow_unsafe)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not allow_unsafe), notes
    except Exception:  # Keras 3 refuses many Keras 2 configs: adapt and retry
        pass
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "adapted.h5"
        dropped = legacy_h5.adapted_copy(path, fixed)
        model = keras.saving.load_model(fixed, compile=False, safe_mode=not allow_unsafe)
    note = "legacy Keras 2 .h5 adapted for Keras 3"
    return model, (note + (f" (dropped {', '.join(dropped)})" if dropped else ""),)


def _short(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def _revived(path: Path, err: Exception, work_dir: Path | None) -> tuple[Path, tuple[str, ...]]:
    """`path` re-exported through the TF1 loader into a new folder under `work_dir` (default: a temporary
    folder removed at exit), and the note that says so; ModelLoadError when that fails too."""
    if work_dir is None:
        work_dir = Path(tempfile.mkdtemp(prefix="edgepipe-revived-"))
        atexit.register(shutil.rmtree, work_dir, True)
    dest = Path(tempfile.mkdtemp(prefix="revived-", dir=work_dir)) / "saved_model"
    try:
        checked = savedmodel_v1.revive(path, dest)
    except Exception as err1:
        shutil.rmtree(dest.parent, ignore_errors=True)
        raise ModelLoadError(f"{path}: cannot read the SavedModel's serving_default signature ({_short(err)}); "
                             f"the TF1 loader failed too ({_short(err1)})") from None
    note = (f"SavedModel revived through the TF1 loader: TF 2 cannot load it ({_short(err)}); its "
            "serving_default graph was frozen to constants and re-exported"
            + (", with the same outputs on a probe batch" if checked else ""))
    return dest, (note,)


def _serving_signature(loaded: Any) -> tuple[tuple[int | None, ...], tuple[int | None, ...], tuple[str, ...]]:
    fn = loaded.signatures["serving_default"]
    spec = list(fn.structured_input_signature[1].values())[0]
    out = list(fn.structured_outputs.values())[0]
    return tuple(spec.shape[1:]), tuple(out.shape[1:]), tuple(str(k) for k in fn.structured_outputs)


def _load_saved_model(path: Path, work_dir: Path | None) -> LoadedModel:
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path}: a directory but not a TF SavedModel (no saved_model.pb)")
    revived: Path | None = None
    notes: tuple[str, ...] = ()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # e.g. a Keras 2 SavedModel with optimizer slots
        revived, notes = _revived(path, err, work_dir)
        loaded = tf.saved_model.load(str(revived))
    try:
        shape, out_shape, out_names = _serving_signature(loaded)
    except Exception as err:
        raise ModelLoadError(f"{path}: cannot read the SavedModel's serving_default signature ({err})") from None
    classes = int(out_shape[-1] or 0) if out_shape else 1
    if len(out_names) > 1 or len(loaded.signatures["serving_default"].structured_input_signature[1]) > 1:
        raise ModelLoadError(f"{path}: a SavedModel with several inputs or outputs: edgepipe reads those from a "
                             ".keras or .h5 model (save the Keras model with model.save('model.keras'))")
    return LoadedModel(ModelFormat.SAVED_MODEL, path, None, shape, classes, hash_of(path), notes, revived, out_shape,
                       out_names)


def load_model(path: Path, *, allow_unsafe: bool = False, work_dir: Path | None = None) -> LoadedModel:
    """Load a model file; every failure becomes one clear ModelLoadError. A SavedModel that TF 2 cannot
    load is re-exported through the TF1 loader under `work_dir` (see LoadedModel.saved_model_dir)."""
    try:
        exists = path.exists()
    except (OSError, ValueError) as err:  # a name the OS refuses
        raise ModelLoadError(f"{path}: not a usable model path ({err})") from None
    if not exists:
        raise ModelLoadError(f"{path}: model not found")
    if path.is_dir():
        return _load_saved_model(path, work_dir)
    fmt = {".keras": ModelFormat.KERAS, ".h5": ModelFormat.H5, ".hdf5": ModelFormat.H5}.get(path.suffix.lower())
    if fmt is None:
        raise ModelLoadError(f"{path}: unsupported model file (expected .keras, .h5 or a SavedModel directory)")
    try:
        model, notes = _load_keras(path, allow_unsafe)
    except ModelLoadError:
        raise
    except Exception as err:
        missing = _UNKNOWN_CLASS.search(str(err))
        if missing:  # a legacy .h5 naming a class Keras does not have
            raise ModelLoadError(f"{path}: the model uses an unknown custom object: {missing.group(1)}; "
                                 "edgepipe runs no code from model files") from None
        msg = " ".join(str(err).split())[:300]
        raise ModelLoadError(f"{path}: cannot load the model: {type(err).__name__}: {msg}") from None
    return from_keras(model, fmt, path, keras_file_hash(path) if fmt is ModelFormat.KERAS else hash_of(path), notes)


def from_keras(model: keras.Model, fmt: ModelFormat, path: Path, content_hash: str,
               notes: tuple[str, ...] = ()) -> LoadedModel:
    """A loaded Keras model; dict inputs or outputs are named by their keys (pipeline.inputs.dict_io)."""
    adapted = dict_io.plain(model, path)
    model, notes = adapted.model, notes + adapted.notes
    shapes = tuple(tuple(t.shape[1:]) for t in model.inputs)
    out_shapes = tuple(tuple(t.shape[1:]) for t in model.outputs)
    out_names = adapted.output_names or \
        tuple(str(n) for n in (getattr(model, "output_names", None) or [model.layers[-1].name]))
    in_names = adapted.input_names or tuple(str(t.name).split(":")[0] for t in model.inputs)
    for kind, names in (("input", in_names), ("output", out_names)):
        if len(names) > 1 and (len(set(names)) != len(names) or any(not n or "." in n for n in names)):
            raise ModelLoadError(f"{path}: the model's {kind} names {', '.join(names)} must be distinct and "
                                 "without '.' (npz keys x_train.<input>, y_train.<output> name them)")
    if len(out_names) != len(out_shapes):
        raise ModelLoadError(f"{path}: the model has {len(out_shapes)} outputs but names {len(out_names)}")
    classes = int(out_shapes[0][-1] or 0) if out_shapes[0] else 1
    return LoadedModel(fmt, path, model, shapes[0], classes, content_hash, notes, output_shape=out_shapes[0],
                       output_names=out_names, input_names=in_names, input_shapes=shapes, output_shapes=out_shapes)


def predict_named(predict: Any, x: dict[str, Any], size: int = 256) -> np.ndarray:
    """predict({input name: batch}) over x (several inputs, each an array or a lazy one) a batch at a time."""
    n = len(next(iter(x.values())))
    parts = [predict({k: np.asarray(v[i : i + size]) for k, v in x.items()}) for i in range(0, n, size)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def predict(loaded: LoadedModel, x: Any, batch_size: int = PREDICT_BATCH, output: int = 0) -> np.ndarray:
    """Float predictions of the reference model (Keras, or the SavedModel's serving signature): its output
    number `output`; a lazy x is read a batch at a time; {input name: array} (several inputs) is in memory."""
    if loaded.keras_model is not None:
        keras_model = loaded.keras_model

        def one(b: Any) -> np.ndarray:
            return dict_io.flat_outputs(infer(keras_model, b, batch_size))[output]

        return predict_named(one, x) if isinstance(x, dict) else predict_batches(one, x)
    import tensorflow as tf

    fn = tf.saved_model.load(str(loaded.saved_model_dir)).signatures["serving_default"]
    outs = []
    for i in range(0, x.shape[0], batch_size):
        res: dict[str, Any] = fn(tf.constant(np.asarray(x[i : i + batch_size])))
        outs.append(np.asarray(list(res.values())[0]))
    return np.concatenate(outs)


def metric_value(pred: np.ndarray, y: np.ndarray, metric: str = "accuracy", x: Any = None) -> float:
    """The Keras/SavedModel predictions scored by the runtimes' one evaluation function (a metric spec); x only
    for a model with one input (several: {input name: array}, which no built-in metric reads)."""
    from targets.runner import score

    return score(pred, y, metric, None if isinstance(x, dict) else x)

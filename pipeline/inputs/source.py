"""The build's input: the reference (teacher) model and the preprocessed data, from a config."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.cache import Cache, cache_key
from pipeline.compress.base import FitSpec, TrainData, one_input
from pipeline.config import Config, MetricSection
from pipeline.errors import ConfigError, DataError, ModelLoadError
from pipeline.inputs.data import Preprocess, RawData, prepare, preprocess_from, read_data, read_image_folder
from pipeline.inputs.examples import get_example
from pipeline.inputs.holdout import with_validation
from pipeline.inputs.models import LoadedModel, ModelFormat, from_keras, load_model, metric_value, predict
from pipeline.inputs.named import output_labels, prepare_named
from pipeline.inputs.teacher import train_teacher
from pipeline.measure.metric import ACCURACY, Labels, Metric, resolve_metric
from pipeline.ui import UI


@dataclass(frozen=True)
class Source:
    reference: LoadedModel
    data: TrainData
    data_id: str  # data content hash + preprocessing, for cache keys
    model_id: str  # the reference model's identity, for cache keys
    preprocess: Preprocess
    metric: Metric = ACCURACY  # what the build judges by
    reference_outputs: np.ndarray | None = None  # the reference model's outputs on x_test, when already computed
    validation: str = "given"  # where the validation split came from: "given" (x_val) or "held out" (of x_train)


def _example_teacher(name: str, raw: RawData, data: TrainData, seed: int, cache: Cache, ui: UI,
                     metric: Metric = ACCURACY) -> Source:
    import keras

    ex = get_example(name)
    key = cache_key("example-teacher", ex.name, ex.version, seed, "validation held out")
    hit = cache.get(key)
    if hit is None:
        keras.utils.set_random_seed(seed)
        model = ex.build_teacher()
        callbacks = ui.keras_callbacks(f"training the {name} teacher", ex.epochs)
        if ex.train is not None:  # several outputs: the example's own losses, on every output's labels
            ex.train(model, data.x_train, raw.y_train, ex.epochs, seed, callbacks)
        else:
            x = np.asarray(one_input(data.x_train))
            target = x if ex.reconstructs else data.y_train  # an autoencoder learns its input
            spec = FitSpec(ex.epochs, learning_rate=2e-3, batch_size=64, seed=seed, callbacks=callbacks)
            train_teacher(model, x, np.asarray(target), spec, reconstruct=ex.reconstructs)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "model.keras")
            hit = cache.put(key, Path(tmp))
    else:
        ui.info(f"teacher of {name}: reused from cache")
    model = keras.saving.load_model(hit / "model.keras", compile=False)
    ref = from_keras(model, ModelFormat.KERAS, Path(f"example:{name}"), key)
    return Source(ref, data, raw.source + "|" + ex.preprocess.key(), key, ex.preprocess, metric,
                  validation=raw.validation)


def _check_validation(raw: RawData, metric: Metric, output: str | None) -> None:
    """reconstruction_auc judges on both kinds of sample: a validation split held out of a training split of
    normal samples only cannot judge anything."""
    if metric.labels is not Labels.BINARY or raw.y_val is None:
        return
    y = output_labels(raw.y_val, output) if output is not None and isinstance(raw.y_val, dict) else raw.y_val
    if y is not None and len(np.unique(np.asarray(y))) < 2:
        how = "held out of the training split" if raw.validation == "held out" else "given"
        raise DataError(f"y_val: reconstruction_auc needs normal (0) and anomalous (1) validation samples, and the "
                        f"validation split ({how}) has only {int(np.asarray(y).reshape(-1)[0])}s: give x_val and y_val "
                        "with both (every choice of the build is judged on them)")


def data_and_metric(raw: RawData, pre: Preprocess, ref: LoadedModel, section: MetricSection | None,
                    where: str) -> tuple[TrainData, Metric]:
    """The metric (on `[metric] output`, default the first output) and the data checked against the model: plain
    npz keys for one input and one output, `x_train.<input>` / `y_train.<output>` for several."""
    names = ref.output_names
    output = section.output if section is not None and section.output is not None else (names[0] if names else None)
    if output is not None and names and output not in names:
        raise ConfigError(f"{where}: [metric] output {output!r} is not an output of the model "
                          f"(outputs: {', '.join(names)})")
    index = names.index(output) if output is not None and output in names else 0
    judged = ref.for_output(index)
    labels = output_labels(raw.y_test, output) if output is not None else raw.y_test
    metric = resolve_metric(section, judged.input_shape, judged.output_shape, where, names, labels=labels)
    _check_validation(raw, metric, output)
    if not (ref.several_inputs or ref.several_outputs or raw.named):
        return prepare(raw, pre, judged.input_shape, judged.num_classes, metric.labels, judged.output_shape), metric
    assert output is not None
    if ref.several_outputs:
        metric = replace(metric, output=output, output_index=index)
    return prepare_named(raw, pre, judged, output, metric.labels), metric


def load_source(config: Config, *, allow_unsafe: bool, cache: Cache, ui: UI, work_dir: Path | None = None) -> Source:
    """Load (or, for a built-in example, train) the reference model and load the data it is judged on.
    `work_dir` holds what loading writes for the build (a SavedModel revived through the TF1 loader)."""
    seed = config.quantize.seed
    if config.model.example is not None:
        ex = get_example(config.model.example)
        if config.data is None:
            raw, pre = with_validation(ex.load(), seed, _judged_output(config)), ex.preprocess
            probe = from_keras(ex.build_teacher(), ModelFormat.KERAS, Path(f"example:{ex.name}"), "")
            data, metric = data_and_metric(raw, pre, probe, config.metric, f"example {ex.name}")
            return _example_teacher(ex.name, raw, data, seed, cache, ui, metric)
        raise DataError("a built-in example brings its own data: remove the [data] section or use model.path")
    assert config.model.path is not None and config.data is not None
    with ui.task("loading the model"):
        ref = load_model(config.resolve(config.model.path), allow_unsafe=allow_unsafe, work_dir=work_dir)
    if None in ref.input_shape:  # the int8 artifacts and their runners are built for one input shape
        shown = "x".join("?" if d is None else str(d) for d in ref.input_shape)
        raise ModelLoadError(f"{ref.path}: the model input {shown} has unknown dimensions; edgepipe builds for a "
                             "fixed shape: save the model with a fixed input size, e.g. keras.Input((H, W, C))")
    for note in ref.notes:
        ui.info(note)
    section = config.data
    if section.path is not None:
        raw = read_data(config.resolve(section.path))
    else:
        assert section.images is not None and section.image_size is not None
        channels = ref.input_shape[-1] or 3
        raw = read_image_folder(config.resolve(section.images), section.image_size, int(channels), seed)
    raw = with_validation(raw, seed, _judged_output(config))
    pre = preprocess_from(section)
    data, metric = data_and_metric(raw, pre, ref, config.metric, str(ref.path))
    pred = None
    if config.metric is not None:
        data, pred = _metric_checked(ref, data, metric, ui)
    return Source(ref, data, raw.source + "|" + pre.key() + "|" + metric.spec, ref.content_hash, pre, metric, pred,
                  raw.validation)


def _judged_output(config: Config) -> str | None:
    return config.metric.output if config.metric is not None else None


def _metric_checked(ref: LoadedModel, data: TrainData, metric: Metric, ui: UI) -> tuple[TrainData, np.ndarray]:
    """The test split as the metric needs it (sqnr / agreement: the reference model's own outputs), and the
    metric computed once on the reference model: an error there is bad input (one line, exit 2). The reference
    model's outputs come back too: the build reports its metric from them instead of predicting again."""
    with ui.task(f"reference model: {metric.name} on the test split"):
        pred = predict(ref, data.x_test, output=metric.output_index)
        if metric.labels is Labels.REFERENCE:  # the validation split's labels too: the reference's outputs
            val = predict(ref, data.x_val, output=metric.output_index) if data.x_val is not None else None
            data = replace(data, y_test=pred.astype(np.float32),
                           y_val=None if val is None else val.astype(np.float32))
        try:
            metric_value(pred, data.y_test, metric.spec, data.x_test)
        except Exception as err:  # the user's function, or labels that do not suit the metric
            raise DataError(f"[metric] {metric.name}: cannot score the reference model: "
                            f"{type(err).__name__}: {err}") from None
    return data, pred

"""Training helpers shared by the stages: output convention, logits, and a seeded (distillation) fit.

A classifier always trains on a logits copy of the model (final softmax removed) so the losses are computed from
logits; the trained model is handed back as a plain, uncompiled functional model in the asked convention.
Labels (and teacher logits, for distillation) travel packed in one `y` array so a plain Keras loss function
does the work: no custom model classes, nothing backend-specific.

A model that is not a classifier (`StageContext.labels` other than "classes") trains on its outputs as they are,
with mean squared error against the task's target (`task_targets`) and, for distillation, against the teacher's
outputs (`fit_regression`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.compress.base import Distillation, FitSpec, TrainData, one_input
from pipeline.compress.graph import LayerEdit, final_layer, graph_of, layer_config, rebuild, walk
from pipeline.inputs.arrays import Samples, fit_data, predict_batches, take, validation_data
from pipeline.inputs.infer import infer

L = keras.layers


def _innermost_final(model: keras.Model) -> keras.layers.Layer:
    layer = final_layer(model)
    while isinstance(layer, keras.Model):
        layer = final_layer(layer)
    return layer


def _is_softmax_layer(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, L.Softmax):
        return True
    fn = getattr(layer, "activation", None)
    return fn is not None and getattr(fn, "__name__", "") == "softmax"


def is_softmax_output(model: keras.Model) -> bool:
    """Whether the model's final layer outputs softmax probabilities (else: logits)."""
    return _is_softmax_layer(_innermost_final(model))


def logits_model(model: keras.Model) -> keras.Model:
    """A functional copy whose output is the pre-softmax logits (a copy as is when it already is)."""
    final = _innermost_final(model)
    if not _is_softmax_layer(final):
        return rebuild(model)

    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        if layer is not final:
            return None
        if isinstance(layer, L.Softmax | L.Activation):
            return []
        return [LayerEdit(type(layer), layer_config(layer, activation="linear"), layer.get_weights())]

    return rebuild(model, transform)


def with_output_convention(model: keras.Model, softmax: bool) -> keras.Model:
    """A functional copy that outputs softmax probabilities (`softmax`) or logits."""
    logits = logits_model(model)
    if not softmax:
        return logits
    final = _innermost_final(logits)
    if type(final) is L.Dense:

        def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
            if layer is not final:
                return None
            return [LayerEdit(L.Dense, layer_config(layer, activation="softmax"), layer.get_weights())]

        return rebuild(logits, transform)
    names = {layer.name for layer in logits.layers}
    name, i = "softmax", 1
    while name in names:
        name, i = f"softmax_{i}", i + 1
    out = L.Activation("softmax", name=name)(graph_of(logits).outputs[0])
    return rebuild(keras.Model(logits.inputs, out, name=model.name))


def predict_logits(model: keras.Model, x: Samples, batch_size: int = 256) -> np.ndarray:
    """The model's logits on `x` (exact pre-softmax values for a softmax model)."""
    logits = logits_model(model)
    return predict_batches(lambda b: infer(logits, b, batch_size), x).astype(np.float32)


def distillation_loss(temperature: float, alpha: float) -> Callable[[Any, Any], Any]:
    """Loss on logits; y_true = [label, teacher logits...] (just [label] when alpha == 0).

    alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(label).
    """
    t = float(temperature)

    def distill_loss(y_true: Any, y_pred: Any) -> Any:
        labels = ops.cast(y_true[:, 0], "int32")
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        if alpha == 0.0:
            return hard
        teacher = y_true[:, 1:]
        p_teacher = ops.softmax(teacher / t, axis=-1)
        kl = ops.sum(
            p_teacher * (ops.log_softmax(teacher / t, axis=-1) - ops.log_softmax(y_pred / t, axis=-1)),
            axis=-1,
        )
        return alpha * t * t * kl + (1.0 - alpha) * hard

    return distill_loss


def label_accuracy(y_true: Any, y_pred: Any) -> Any:
    """Accuracy against the hard label in column 0 of the packed y."""
    labels = ops.cast(y_true[:, 0], "int32")
    return ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels), "float32")


def recalibrate_batchnorm(model: keras.Model, x: Samples, max_samples: int = 1024) -> None:
    """Set every BatchNorm's moving mean/variance to the exact statistics of its input on `x`.

    A freshly built or pruned student trains for a few hundred steps only; with momentum 0.99 its moving
    statistics are still far from the truth, and inference-mode accuracy collapses. BN recalibration
    (as after channel pruning) fixes that. One inference pass over the graph in order: each BatchNorm gets its
    statistics just before it runs (graph.walk), so the layers after it see its recalibrated output (a sub-model per layer,
    as before, cost a traced pass per BatchNorm: bench/keras_passes.py compares the two).
    BatchNorms inside a nested model keep theirs. The pass holds every sample's activations of the layers in
    flight, so large inputs use fewer samples: at most _RECALIBRATION_VALUES input values (MobileNetV2 @224: 212
    images, each BatchNorm's statistics still over millions of values a channel).
    """
    per_sample = max(1, int(np.prod(x.shape[1:])))
    head = ops.convert_to_tensor(np.asarray(x[: min(max_samples, max(64, _RECALIBRATION_VALUES // per_sample))]))
    pending = {id(layer) for layer in model.layers if isinstance(layer, L.BatchNormalization)}  # not nested ones

    def call(layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if id(layer) in pending:
            pending.discard(id(layer))  # a shared BatchNorm: from its first call's input
            act = np.asarray(args[0])
            axes = tuple(i for i in range(act.ndim) if i != (layer.axis % act.ndim))
            gamma_beta = layer.get_weights()[: len(layer.get_weights()) - 2]
            layer.set_weights([*gamma_beta, act.mean(axis=axes), act.var(axis=axes)])
        return layer(*args, **kwargs)

    walk(model, [head], call)


_RECALIBRATION_VALUES = 32_000_000  # input values (128 MB of float32) the recalibration pass takes at most


class _RecalibrateBN(keras.callbacks.Callback):
    """Recalibrates BatchNorm statistics before each validation pass, so early stopping sees real accuracy."""

    def __init__(self, x: Samples) -> None:
        super().__init__()
        self.x = x

    def on_test_begin(self, logs: Any = None) -> None:
        recalibrate_batchnorm(self.model, self.x)


def teacher_guidance(ctx: Any, temperature: float = 4.0, alpha: float = 0.7) -> Distillation:
    """Fine-tuning after pruning or decomposition also distils from the reference teacher: the pruned
    model then recovers the teacher's accuracy rather than only the labels'."""
    return Distillation(predict_logits(ctx.teacher, ctx.data.x_train), alpha, temperature)


def fine_tune(model: keras.Model, ctx: Any, section: Any, epochs: int, label: str,
              callbacks: list[Any] | None = None) -> keras.Model:
    """Fine-tuning after a structural change (pruning, decomposition): the stage section's learning rate and
    batch size, progress, and distillation from the reference teacher. `epochs <= 0` returns `model`."""
    if epochs <= 0:
        return model
    callbacks = [*(callbacks or []), *ctx.progress_callbacks(label, epochs)]
    spec = FitSpec(epochs, section.learning_rate, section.batch_size, ctx.seed, callbacks=callbacks)
    if ctx.labels != "classes":  # the task's loss: MSE against its targets, its input, or the reference's outputs
        x, target = task_targets(ctx.data, ctx.labels, ctx.teacher)
        trained, _ = fit_regression(model, x, target, spec)
        return trained
    trained, _ = fit_classifier(model, ctx.data, spec, teacher_guidance(ctx))
    return trained


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index split; validation gets round(n * fraction), at least one."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * fraction))))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _hold_out(x: Samples, y: np.ndarray, fraction: float, seed: int
              ) -> tuple[Samples, np.ndarray, tuple[Samples, np.ndarray] | None]:
    """(x, y) for training and the seeded validation split (None when `fraction` is 0); views for a lazy x."""
    if fraction <= 0.0 or len(x) <= 1:
        return x, y, None
    tr, va = split_indices(len(x), fraction, seed)
    tr, va = np.sort(tr), np.sort(va)
    return take(x, tr), y[tr], (take(x, va), y[va])


def _fit_callbacks(spec: FitSpec, x: Samples, has_bn: bool, validating: bool,
                   monitor: str = "val_label_accuracy") -> list[Any]:
    """The spec's callbacks, BatchNorm recalibration, and early stopping on validation accuracy (or `monitor`,
    minimised when it is a loss)."""
    out = list(spec.callbacks) + ([_RecalibrateBN(x)] if has_bn else [])
    if validating and spec.patience is not None:
        # BatchNorm's moving statistics need some hundred steps before validation accuracy means anything:
        # no stopping in the first third of the epochs.
        out.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode="min" if monitor.endswith("loss") else "max", patience=spec.patience,
            restore_best_weights=True, start_from_epoch=max(spec.patience, spec.epochs // 3)))
    return out


def fit_classifier(model: keras.Model, data: TrainData, spec: FitSpec, teacher: Distillation | None = None,
                   softmax: bool | None = None) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train a copy of `model` on logits with hard labels (and distillation from the teacher's logits).

    Returns the trained model (uncompiled; in the `softmax` convention, default: the input's) and the
    Keras history. With `spec.validation_split` and `spec.patience`, EarlyStopping on validation accuracy
    restores the best epoch. `spec.callbacks` see the logits training model as `self.model`.
    """
    if softmax is None:
        softmax = is_softmax_output(model)
    if spec.epochs <= 0:
        return with_output_convention(model, softmax), {}
    keras.utils.set_random_seed(spec.seed)
    train = logits_model(model)
    y = data.y_train.astype(np.float32).reshape(-1, 1)
    alpha, temperature = (teacher.alpha, teacher.temperature) if teacher is not None else (0.0, 4.0)
    if teacher is not None and alpha > 0.0:
        y = np.concatenate([y, np.asarray(teacher.outputs, dtype=np.float32)], axis=1)
    else:
        alpha = 0.0
    x, y, validation = _hold_out(one_input(data.x_train), y, spec.validation_split, spec.seed)
    has_bn = any(isinstance(layer, L.BatchNormalization) for layer in train.layers)
    train.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss=distillation_loss(temperature, alpha),
                  metrics=[label_accuracy], jit_compile=False)
    history = train.fit(**fit_data(x, y, spec.batch_size), epochs=spec.epochs,
                        validation_data=validation_data(validation, spec.batch_size), shuffle=True,
                        verbose=0, callbacks=_fit_callbacks(spec, x, has_bn, validation is not None))
    if has_bn and validation is None:
        recalibrate_batchnorm(train, x)
    trained = with_output_convention(train, softmax)
    return trained, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def predict_outputs(model: keras.Model, x: Samples, batch_size: int = 256) -> np.ndarray:
    """The model's outputs on `x`, as they are (no softmax removed): what a non-classifier is judged on."""
    return predict_batches(lambda b: infer(model, b, batch_size), x).astype(np.float32)


def task_targets(data: TrainData, labels: str, reference: keras.Model) -> tuple[Samples, Samples]:
    """(x, target) a model that is not a classifier trains on, by what its metric's labels are (`Labels` values):
    "targets" (mse, mae, rmse): y; "binary" (reconstruction_auc, an autoencoder): its own input, unlabeled, from
    the normal samples (y == 0) when there are any; "reference" (sqnr, agreement): the reference model's outputs."""
    x = one_input(data.x_train)
    if labels == "targets":
        return x, np.asarray(data.y_train, dtype=np.float32)
    if labels == "binary":
        normal = np.asarray(data.y_train).reshape(-1) == 0
        x = take(x, np.flatnonzero(normal)) if normal.any() else x
        return x, x
    if labels == "reference":
        return x, predict_outputs(reference, x)
    raise ValueError(f"no training target for labels {labels!r}: the compression stages cannot train this task")


def regression_loss(alpha: float, width: int) -> Callable[[Any, Any], Any]:
    """MSE on flat outputs; y_true = [target, teacher outputs] (just [target] when alpha == 0), each `width` wide.

    alpha * MSE(teacher outputs) + (1 - alpha) * MSE(target).
    """

    def regress_loss(y_true: Any, y_pred: Any) -> Any:
        hard = ops.mean(ops.square(y_true[:, :width] - y_pred), axis=-1)
        if alpha == 0.0:
            return hard
        soft = ops.mean(ops.square(y_true[:, width:] - y_pred), axis=-1)
        return alpha * soft + (1.0 - alpha) * hard

    return regress_loss


def fit_regression(model: keras.Model, x: Samples, target: Samples, spec: FitSpec,
                   teacher: Distillation | None = None) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train a copy of `model` on its outputs as they are: MSE against `target` (and against the teacher's
    outputs with weight `teacher.alpha`, for distillation). Early stopping (with `spec.validation_split` and
    `spec.patience`) watches the validation loss. Returns the trained model (uncompiled functional) and the
    Keras history."""
    if spec.epochs <= 0:
        return rebuild(model), {}
    keras.utils.set_random_seed(spec.seed)
    train = rebuild(model)
    flat = keras.Model(train.inputs, L.Flatten()(train.outputs[0]))  # shares train's layers: one y of any shape
    y = np.asarray(target, dtype=np.float32).reshape(len(x), -1)
    width = y.shape[1]
    alpha = teacher.alpha if teacher is not None else 0.0
    if teacher is not None and alpha > 0.0:
        y = np.concatenate([y, np.asarray(teacher.outputs, dtype=np.float32).reshape(len(x), -1)], axis=1)
    else:
        alpha = 0.0
    x, y, validation = _hold_out(x, y, spec.validation_split, spec.seed)
    has_bn = any(isinstance(layer, L.BatchNormalization) for layer in train.layers)
    flat.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss=regression_loss(alpha, width),
                 jit_compile=False)
    history = flat.fit(**fit_data(x, y, spec.batch_size), epochs=spec.epochs,
                       validation_data=validation_data(validation, spec.batch_size), shuffle=True,
                       verbose=0, callbacks=_fit_callbacks(spec, x, has_bn, validation is not None,
                                                           monitor="val_loss"))
    if has_bn and validation is None:
        recalibrate_batchnorm(train, x)
    return rebuild(train), {k: [float(v) for v in vals] for k, vals in history.history.items()}

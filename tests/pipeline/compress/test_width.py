from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from pipeline.compress.width import scale_width


def test_scale_width_residual(residual_model: Callable[..., keras.Model]) -> None:
    teacher = residual_model()
    student = scale_width(teacher, 0.5)
    assert student.count_params() < teacher.count_params()
    assert student.output_shape == teacher.output_shape
    assert student.get_layer("stem").filters == student.get_layer("pw").filters == 4
    assert student.get_layer("c1").filters == 3
    assert student.get_layer("c2").filters == 2
    assert student.get_layer("fc").units == 5
    assert student.get_layer("classifier").units == 5
    x = np.zeros((2, 8, 8, 3), "float32")
    assert student.predict(x, verbose=0).shape == (2, 5)


def test_scale_width_sequential_and_rnn(
    sequential_model: Callable[..., keras.Model], rnn_model: Callable[..., keras.Model]
) -> None:
    seq = scale_width(sequential_model(), 0.5)
    assert seq.get_layer("sep").filters == 4 and seq.get_layer("logits").units == 4
    rnn = scale_width(rnn_model(), 0.25)
    assert rnn.get_layer("lstm").units == 2 and rnn.get_layer("gru").units == 2
    assert rnn.output_shape == (None, 3)
    tiny = scale_width(sequential_model(), 0.01)
    assert tiny.get_layer("conv_a").filters == 1

"""A small regression task for the tests: 3 float targets, a smooth nonlinear function of 16 features, and a
Dense regressor trained on it (mse)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_regression_npz(path: Path, seed: int = 0) -> None:
    """y = a smooth nonlinear function of 4 directions of x (3 targets from 16 features)."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(16, 4)) / 2, rng.normal(size=(4, 3))
    x = rng.normal(size=(900, 16)).astype(np.float32)
    y = (np.tanh(x @ w1) @ w2).astype(np.float32)
    np.savez(path, x_train=x[:700], y_train=y[:700], x_test=x[700:], y_test=y[700:])


def train_regressor(folder: Path) -> tuple[Path, Path]:
    """folder/reg.npz and folder/reg.keras (16 -> 64 tanh -> 64 tanh -> 3), trained 30 epochs."""
    import keras

    write_regression_npz(folder / "reg.npz")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="tanh"),
                              keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    with np.load(folder / "reg.npz") as d:
        model.fit(d["x_train"], d["y_train"], epochs=30, batch_size=32, verbose=0)
    model.save(folder / "reg.keras")
    return folder / "reg.keras", folder / "reg.npz"

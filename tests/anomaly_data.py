"""Generated anomaly-detection data for tests: normal samples lie near a `latent`-dimensional subspace of
R^dim; anomalies add a component from another one (y_test and y_val: 0 normal, 1 anomalous; y_train all normal:
the validation split that choices are judged on needs anomalies too, so it is given, not held out of train)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_anomaly_npz(path: Path, *, dim: int, latent: int, n_train: int, n_test: int, shift: float,
                      seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    basis, other = (rng.normal(size=(latent, dim)) / np.sqrt(latent) for _ in range(2))

    def normal(n: int) -> np.ndarray:
        return rng.normal(size=(n, latent)) @ basis + 0.05 * rng.normal(size=(n, dim))

    def mixed(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([normal(n), normal(n) + shift * (rng.normal(size=(n, latent)) @ other)])
        return x.astype(np.float32), np.r_[np.zeros(n), np.ones(n)].astype(np.int64)

    x_test, y_test = mixed(n_test)
    x_train = normal(n_train).astype(np.float32)
    x_val, y_val = mixed(n_test)
    np.savez(path, x_train=x_train, y_train=np.zeros(n_train, np.int64), x_test=x_test, y_test=y_test,
             x_val=x_val, y_val=y_val)

"""Generated anomaly-detection data for tests: normal samples lie near a `latent`-dimensional subspace of
R^dim; anomalies add a component from another one (y_test: 0 normal, 1 anomalous; y_train all normal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_anomaly_npz(path: Path, *, dim: int, latent: int, n_train: int, n_test: int, shift: float,
                      seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    basis, other = (rng.normal(size=(latent, dim)) / np.sqrt(latent) for _ in range(2))

    def normal(n: int) -> np.ndarray:
        return rng.normal(size=(n, latent)) @ basis + 0.05 * rng.normal(size=(n, dim))

    x_test = np.concatenate([normal(n_test), normal(n_test) + shift * (rng.normal(size=(n_test, latent)) @ other)])
    np.savez(path, x_train=normal(n_train).astype(np.float32), y_train=np.zeros(n_train, np.int64),
             x_test=x_test.astype(np.float32), y_test=np.r_[np.zeros(n_test), np.ones(n_test)].astype(np.int64))

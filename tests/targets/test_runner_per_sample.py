"""Per-sample statistics (targets/runner_metrics.per_sample): the metric recomputed from them equals score(),
on the full set and on any subset, for every metric; the device runner returns them with its accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from targets.runner_metrics import from_per_sample, per_sample, score, score_and_per_sample

SPECS = ["accuracy", "top_k:2", "mse", "mae", "rmse", "reconstruction_auc", "sqnr", "agreement:top1",
         "agreement:cosine"]


def _case(spec: str, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(outputs, y, x) of the kind the metric reads."""
    rng = np.random.default_rng(seed)
    if spec in ("accuracy", "top_k:2"):
        return rng.normal(size=(n, 5)), rng.integers(0, 5, n), None
    if spec in ("mse", "mae", "rmse"):
        target = rng.normal(size=(n, 2, 3))
        return target + rng.normal(scale=0.3, size=target.shape), target, None
    if spec == "reconstruction_auc":
        x = rng.normal(size=(n, 4, 4))
        y = (rng.random(n) < 0.3).astype(int)
        noise = np.where(y[:, None, None] == 1, 0.5, 0.2)
        return x + rng.normal(size=x.shape) * noise, y, x
    ref = rng.normal(size=(n, 6))  # sqnr, agreement: y holds the reference model's outputs
    return ref + rng.normal(scale=0.2, size=ref.shape), ref, None


@pytest.mark.parametrize("spec", SPECS)
def test_from_per_sample_equals_score(spec: str) -> None:
    out, y, x = _case(spec)
    stats = per_sample(out, y, spec, x)
    assert stats is not None
    assert stats.shape == ((len(out), 2) if spec == "sqnr" else (len(out),))
    assert from_per_sample(stats, y, spec) == pytest.approx(score(out, y, spec, x), rel=1e-9, abs=1e-12)
    rows = np.random.default_rng(1).choice(len(out), 120, replace=False)  # any subset: the bootstrap's use
    sub_x = None if x is None else x[rows]
    assert from_per_sample(stats[rows], y[rows], spec) == pytest.approx(
        score(out[rows], y[rows], spec, sub_x), rel=1e-9, abs=1e-12)
    value, again = score_and_per_sample(out, y, spec, x)
    assert value == score(out, y, spec, x) and again is not None and np.array_equal(again, stats)


def _stats(outputs: np.ndarray, y: np.ndarray, spec: str = "accuracy") -> list:
    stats = per_sample(outputs, y, spec)
    assert stats is not None
    return stats.tolist()


def test_per_sample_values_by_hand() -> None:
    out = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert _stats(out, np.array([1, 1, 2])) == [1.0, 0.0, 1.0]
    assert _stats(out, np.array([1, 1, 0]), "top_k:2") == [1.0, 1.0, 0.0]
    ref = np.array([[3.0, 4.0], [0.0, 5.0]])
    assert _stats(ref + [[0.5, 0.0], [0.0, 0.0]], ref, "sqnr") == [[25.0, 0.25], [25.0, 0.0]]
    assert _stats(np.array([[1.0, 2.0]]), np.array([[1.0, 0.0]]), "mse") == [2.0]
    assert _stats(np.array([[6.0, 8.0], [0.0, -2.0]]), ref, "agreement:cosine") == pytest.approx([1.0, -1.0])


def test_reconstruction_errors_read_lazily_in_batches() -> None:
    """x is read a batch at a time (as runner_arrays' lazy arrays are): over 1024 samples, several batches."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2500, 3))
    out = x + rng.normal(scale=0.1, size=x.shape)
    reads: list[int] = []

    class Lazy:
        shape = x.shape

        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, key: slice) -> np.ndarray:
            reads.append(len(range(*key.indices(len(x)))))
            return x[key]

    stats = per_sample(out, np.zeros(2500), "reconstruction_auc", Lazy())
    assert stats is not None and np.allclose(stats, np.mean((x - out) ** 2, axis=1))
    assert reads == [1024, 1024, 452]


def test_no_per_sample_form_for_a_function_and_empty_sets() -> None:
    assert per_sample(np.zeros((3, 2)), np.zeros(3), "function:mymetrics:first") is None
    assert np.shape(_stats(np.zeros((0, 2)), np.zeros(0), "sqnr")) == (0,)  # an empty (0, 2) array, as a list
    empty = per_sample(np.zeros((0, 2)), np.zeros(0), "sqnr")
    assert empty is not None and empty.shape == (0, 2)
    assert from_per_sample(np.zeros(0), np.zeros(0), "accuracy") == score(np.zeros((0, 2)), np.zeros(0)) == 0.0
    with pytest.raises(ValueError, match="no per-sample form"):
        from_per_sample(np.zeros(3), np.zeros(3), "function:mymetrics:first")
    with pytest.raises(ValueError, match="unknown metric"):
        per_sample(np.zeros((3, 2)), np.zeros(3), "f1")


def test_runner_returns_per_sample_with_its_accuracy(onnx_model: tuple[Path, Path]) -> None:
    from targets import runner

    model, eval_path = onnx_model
    result = runner.run(model, eval_path, runner.Bench(1, 2, 1))
    stats = result["per_sample"]
    assert len(stats) == result["samples"] == 64 and set(stats) <= {0.0, 1.0}
    assert np.mean(stats) == result["accuracy"] and result["accuracy"] < 1.0

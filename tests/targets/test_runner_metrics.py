"""Each metric of targets/runner_metrics.py against a value computed by hand (or by scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from targets.runner_metrics import HIGHER_IS_BETTER, roc_auc, score

OUT = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
LABELS = np.array([1, 1, 2, 1])


def test_accuracy_and_top_k() -> None:
    assert score(OUT, LABELS) == 0.5  # rows 0 and 2 right
    assert score(OUT, LABELS, "top_k:2") == 1.0  # label 1 is second in rows 1 and 3
    assert score(OUT, np.array([0, 2, 0, 2]), "top_k:2") == 0.0
    assert score(OUT, np.array([0, 2, 0, 2]), "top_k:3") == 1.0


def test_regression_errors() -> None:
    out, y = np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[1.0, 0.0], [2.0, 5.0]])
    assert score(out, y, "mse") == pytest.approx((0 + 4 + 1 + 0) / 4)
    assert score(out, y, "mae") == pytest.approx((0 + 2 + 1 + 0) / 4)
    assert score(out, y, "rmse") == pytest.approx(math.sqrt(5 / 4))


def test_reconstruction_auc_matches_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    out = x + rng.normal(scale=np.r_[np.full(20, 0.1), np.full(20, 0.3)][:, None], size=(40, 6))
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    errors = np.mean((x - out) ** 2, axis=1)
    assert score(out, y, "reconstruction_auc", x) == pytest.approx(roc_auc_score(y, errors))
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.5, 0.5])) == pytest.approx(0.875)  # a tie: half
    with pytest.raises(ValueError, match="both normal"):
        roc_auc(np.zeros(3), np.arange(3.0))


def test_sqnr_and_agreement_against_reference_outputs() -> None:
    ref = np.array([[3.0, 4.0], [0.0, 5.0]])  # signal 50
    assert score(ref + np.array([[0.5, 0.0], [0.0, 0.0]]), ref, "sqnr") == pytest.approx(10 * math.log10(50 / 0.25))
    assert score(ref, ref, "sqnr") == 100.0
    assert score(np.array([[1.0, 0.0], [0.0, 1.0]]), ref, "agreement:top1") == 0.5
    assert score(np.array([[6.0, 8.0], [0.0, -2.0]]), ref, "agreement:cosine") == pytest.approx(0.0)


def test_function_and_bad_values(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymetrics.py").write_text(
        "import numpy as np\n"
        "def first(outputs, y):\n    return float(outputs[0, 0])\n"
        "def nan(outputs, y):\n    return float('nan')\n"
        "def text(outputs, y):\n    return 'high'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert score(OUT, LABELS, "function:mymetrics:first") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="gave nan"):
        score(OUT, LABELS, "function:mymetrics:nan")
    with pytest.raises(ValueError):
        score(OUT, LABELS, "function:mymetrics:text")
    with pytest.raises(ValueError, match="unknown metric"):
        score(OUT, LABELS, "f1")
    assert HIGHER_IS_BETTER["mse"] is False and HIGHER_IS_BETTER["sqnr"] is True

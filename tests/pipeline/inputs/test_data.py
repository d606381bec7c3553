from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.inputs.data import Preprocess, prepare, read_image_folder, read_npz


def _npz(tmp_path: Path, **over: np.ndarray) -> Path:
    arrays = {"x_train": np.ones((20, 8, 8, 1), np.float32), "y_train": np.arange(20) % 10,
              "x_test": np.ones((10, 8, 8, 1), np.float32), "y_test": np.arange(10)}
    arrays.update(over)
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def test_preprocess_is_scale_then_mean_std() -> None:
    pre = Preprocess(scale=255.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = np.full((1, 2, 2, 3), 255.0)
    assert np.allclose(pre(x), 2.0)


def test_prepare_adds_channel_axis_and_casts_labels(tmp_path: Path) -> None:
    raw = read_npz(_npz(tmp_path, x_train=np.ones((20, 8, 8)), x_test=np.ones((10, 8, 8))))
    d = prepare(raw, Preprocess(16.0), (8, 8, 1), 10)
    assert d.x_train.shape == (20, 8, 8, 1) and d.x_train.dtype == np.float32 and d.y_test.dtype == np.int64


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"y_test": np.arange(10) + 5}, "labels out of range"),
        ({"y_train": -(np.arange(20) % 3)}, "labels out of range"),
        ({"x_train": np.full((20, 8, 8, 1), np.nan, np.float32)}, "NaN or inf"),
        ({"x_test": np.ones((10, 7, 8, 1), np.float32)}, "does not fit the model input"),
        ({"y_train": np.arange(19) % 10}, "samples"),
    ],
)
def test_bad_data_is_a_data_error(tmp_path: Path, over: dict, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        prepare(read_npz(_npz(tmp_path, **over)), Preprocess(), (8, 8, 1), 10)


def test_not_an_npz_and_missing_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        read_npz(bad)
    p = tmp_path / "partial.npz"
    np.savez(p, x_train=np.ones(3))
    with pytest.raises(DataError, match="missing y_train, x_test, y_test"):
        read_npz(p)


def test_image_folder_split_is_stratified(tmp_path: Path) -> None:
    from PIL import Image

    for cls, value in (("cat", 40), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(np.full((12, 10, 3), value + i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    raw = read_image_folder(tmp_path, (8, 8), 3)
    assert raw.x_train.shape == (16, 8, 8, 3) and raw.x_test.shape == (4, 8, 8, 3)
    assert sorted(raw.y_test.tolist()) == [0, 0, 1, 1]
    assert isinstance(raw.x_train, np.ndarray)  # small: decoded once, in memory


def test_large_image_folder_is_decoded_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above IN_MEMORY_BYTES the splits are lazy: a slice decodes its files only, with the same pixels."""
    from PIL import Image

    from pipeline.inputs import data as data_module
    from pipeline.inputs.images import ImageFiles

    for cls, value in (("a", 10), ("b", 90)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.full((12, 10), value + i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    eager = read_image_folder(tmp_path, (8, 8), 1)
    monkeypatch.setattr(data_module, "IN_MEMORY_BYTES", 0)
    lazy = read_image_folder(tmp_path, (8, 8), 1)
    assert isinstance(lazy.x_train, ImageFiles) and lazy.source == eager.source
    assert np.array_equal(lazy.x_train[2:5], eager.x_train[2:5]) and np.array_equal(np.asarray(lazy.x_test), eager.x_test)
    (tmp_path / "b" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        read_image_folder(tmp_path, (8, 8), 1)

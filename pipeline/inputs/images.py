"""An image folder as a lazy array: files decoded (converted and resized) a batch at a time, when read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.inputs.arrays import Lazy


class ImageFiles(Lazy):
    """Images as a (N, H, W, C) float32 array of 0..255 values, decoded when a slice is read."""

    def __init__(self, files: Sequence[Path], size: tuple[int, int], channels: int) -> None:
        self.files, self.size, self.channels = list(files), size, channels
        self.shape: tuple[int, ...] = (len(self.files), size[0], size[1], channels)
        self.dtype = np.dtype(np.float32)

    def decode(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                pixels = im.convert("L" if self.channels == 1 else "RGB").resize((self.size[1], self.size[0]))
                return np.asarray(pixels, np.float32).reshape(self.size[0], self.size[1], self.channels)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{path}: not a readable image ({err})") from None

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.decode(self.files[int(key)])
        picked = np.arange(len(self.files))[key]
        return np.stack([self.decode(self.files[int(i)]) for i in picked]) if picked.size else \
            np.empty((0, *self.shape[1:]), np.float32)

    def size_bytes(self) -> int:
        """Decoded, as float32."""
        return int(np.prod(self.shape)) * 4

    def subset(self, index: np.ndarray) -> ImageFiles:
        return ImageFiles([self.files[int(i)] for i in index], self.size, self.channels)


def check_readable(files: Sequence[Path]) -> None:
    """Each file opens as an image (its header; pixels are decoded when read): bad input fails up front."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                im.size  # noqa: B018
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            raise DataError(f"{f}: not a readable image ({err})") from None

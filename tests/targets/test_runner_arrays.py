"""Arrays read slice by slice (targets/runner_arrays.py): .npy files and uncompressed .npz members give what
np.load gives, for every kind of index; write_npz writes what np.load reads; reads stay at the slice's size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from targets.runner_arrays import npz_members, open_npy, read_member, write_npz

ROOT = Path(__file__).resolve().parents[2]

X = np.random.default_rng(0).random((300, 4, 5)).astype(np.float32)
KEYS = [7, -1, slice(10, 20), slice(290, 400), slice(None, None, -7), slice(5, 1, -1), slice(3, 90, 4),
        [3, 1, 299], np.arange(300) % 3 == 0, (slice(2, 4), 1)]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k)[:20] for k in KEYS])
def test_every_index_reads_what_numpy_reads(key: object, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "d.npz", x=X, y=np.arange(300))
    for lazy in (open_npy(tmp_path / "x.npy"), npz_members(tmp_path / "d.npz")["x"]):
        assert lazy is not None and lazy.shape == X.shape and len(lazy) == 300
        assert np.array_equal(lazy[key], X[key])  # type: ignore[index]
    assert np.array_equal(np.asarray(npz_members(tmp_path / "d.npz")["y"]), np.arange(300))


def test_write_npz_streams_what_np_load_reads(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    write_npz(tmp_path / "e.npz", {"x": open_npy(tmp_path / "x.npy"), "y": np.arange(300), "s": np.float32(2)},
              chunk=7)
    with np.load(tmp_path / "e.npz") as d:
        assert np.array_equal(d["x"], X) and np.array_equal(d["y"], np.arange(300)) and d["s"] == 2
    np.savez_compressed(tmp_path / "z.npz", x=X)  # compressed members cannot be read in place: read whole
    assert npz_members(tmp_path / "z.npz")["x"] is None
    assert np.array_equal(read_member(tmp_path / "z.npz", "x"), X)


READ_ALL = """
import sys
from targets.runner_arrays import open_npy
def peak_kb():  # VmHWM counts file pages too (a memory map's), which ru_maxrss may miss
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
lazy = open_npy(sys.argv[1])
before = peak_kb()
total = sum(float(lazy[i : i + 1000][:, 0].sum()) for i in range(0, len(lazy), 1000))
print(total, (peak_kb() - before) / 1024)
"""


def test_a_slice_costs_its_size_not_the_file(tmp_path: Path) -> None:
    """Reading a 400 MB file a slice at a time raises a fresh process's peak RSS by a few MB, not 400."""
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(100_000, 1000))
    for i in range(0, 100_000, 10_000):
        big[i : i + 10_000] = i
    del big
    out = subprocess.run([sys.executable, "-c", READ_ALL, str(tmp_path / "big.npy")], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    total, grown_mb = float(out[0]), float(out[1])
    assert total == sum(float(i) * 10_000 for i in range(0, 100_000, 10_000))
    assert grown_mb < 50, f"peak RSS grew {grown_mb:.0f} MB reading a 400 MB file"

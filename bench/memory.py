"""Peak memory of `edgepipe build` on data larger than memory: MobileNetV2 1.0 @224 with evaluation sets of
growing size, each stored as a data folder of .npy shards (uint8 images, `scale = 255`).

    python -m bench.memory [--eval 2000,8000,22000] [--targets tflite,openvino] [--write]

Each build runs in a child process with a fresh cache (pipeline_cost.measure_build); its peak resident set is
the largest of the build process and its conversion children (ru_maxrss from wait4). The evaluation set the
runtimes read is the preprocessed float32 test split (OUT/data/eval.npz, 602,112 bytes per image); the largest
size is chosen above half of this machine's memory. The generated data: MobileNetV2 (weights=None, seeded,
10 classes), 600 training images (calibration picks 300), random pixels and labels: accuracy is not the point,
memory is. `--write` replaces BENCHMARKS.md's memory section with this host kind's table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_cost import measure_build  # noqa: E402

SIZE = 224
SHARD = 1000  # images per .npy shard
TRAIN = 600
MARK = "## Memory: data larger than memory"


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def make_inputs(work: Path, n_eval: int, targets: list[str]) -> Path:
    """model.keras, a data folder (x_test as shards, written one shard at a time) and the config."""
    import keras

    if not (work / "model.keras").exists():
        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=1.0, weights=None, classes=10).save(
            work / "model.keras")
    data = work / f"data-{n_eval}"
    (data / "x_test").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(data / "x_train.npy", _images(rng, TRAIN))
    np.save(data / "y_train.npy", rng.integers(0, 10, TRAIN))
    for i in range(0, n_eval, SHARD):
        np.save(data / "x_test" / f"{i // SHARD:05d}.npy", _images(rng, min(SHARD, n_eval - i)))
    np.save(data / "y_test.npy", rng.integers(0, 10, n_eval))
    tables = "\n".join(f"[targets.{t}]\niterations = 10\nwarmup = 2" for t in targets)
    cfg = work / f"memory-{n_eval}.toml"
    cfg.write_text(f'[model]\npath = "{work / "model.keras"}"\n\n[data]\npath = "{data}"\nscale = 255.0\n\n'
                   f"[quantize]\ncalibration_samples = 300\n\n{tables}\n")
    return cfg


def _gib(n: int) -> float:
    return n * SIZE * SIZE * 3 * 4 / 2**30


def run(sizes: list[int], targets: list[str]) -> list[dict]:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="edgepipe-bench-memory-", dir=os.environ.get("BENCH_TMP")) as tmp:
            cfg = make_inputs(Path(tmp), n, targets)
            cost = measure_build(timeout_s=4 * 3600, config=str(cfg))
        rows.append({"eval": n, "eval_gib": _gib(n), "wall_s": cost.wall_s, "peak_mb": cost.peak_rss_mb,
                     "exit": cost.exit_code, "error": cost.error})
        print(f"eval {n}: {_gib(n):.1f} GiB float32, {cost.wall_s:.0f} s, peak RSS {cost.peak_rss_mb:.0f} MB, "
              f"exit {cost.exit_code} {cost.error or ''}", flush=True)
    return rows


def table(rows: list[dict], targets: list[str]) -> list[str]:
    from system import machine

    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    m = machine()
    flags = sorted({f for f in ("avx2", "avx512_vnni") if f in Path("/proc/cpuinfo").read_text()})
    peaks = [r["peak_mb"] for r in rows if r["exit"] in (0, 1)]
    lines = [MARK, "",
             f"`python -m bench.memory` on {datetime.now(timezone.utc):%Y-%m-%d}, {m.cpu} ({', '.join(flags)}), "
             f"{m.cores} cores, {mem_gib:.1f} GiB of memory; MobileNetV2 1.0 @224, targets {', '.join(targets)}, "
             "data folder of .npy shards (uint8, scale 255), 300 calibration images.", "",
             "| evaluation images | evaluation set (float32) | of this machine's memory | wall | peak RSS | exit |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['eval']:,} | {r['eval_gib']:.1f} GiB | {r['eval_gib'] / mem_gib:.0%} | {r['wall_s']:.0f} s "
                     f"| {r['peak_mb']:,.0f} MB | {r['exit']} |")
    if peaks:
        lines += ["", f"Peak RSS across sizes: {min(peaks):,.0f} to {max(peaks):,.0f} MB: bounded by the model, the "
                  "converters and one batch of images, not by the data size (statement: under "
                  f"{int(np.ceil(max(peaks) / 512) * 512):,} MB for this model at any evaluation-set size)."]
    return lines + [""]


def write(lines: list[str]) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else ""
    if MARK in text:
        head, _, rest = text.partition(MARK)
        tail = rest.split("\n## ", 1)
        text = head + ("\n## " + tail[1] if len(tail) > 1 else "")
    path.write_text(text.rstrip() + "\n\n" + "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval", default="2000,8000,22000", help="evaluation-set sizes, comma-separated")
    ap.add_argument("--targets", default="tflite,openvino")
    ap.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's memory section")
    args = ap.parse_args()
    targets = args.targets.split(",")
    rows = run([int(n) for n in args.eval.split(",")], targets)
    lines = table(rows, targets)
    print("\n".join(lines))
    if args.write:
        write(lines)


if __name__ == "__main__":
    main()

"""The command line of benchmark runs: `edgepipe bench ARTIFACT...`, `edgepipe bench history`, `edgepipe bench
compare`, and the fleet flags of `edgepipe verify`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SUBCOMMANDS = ("history", "compare")
DEFAULT_JOBS = 4


def merge_subcommand(argv: list[str]) -> list[str]:
    """`bench history ...` -> `bench history` as one command word (`bench` itself takes artifacts, not a
    subcommand): the first word after the global options decides."""
    out = list(argv)
    for i, word in enumerate(out):
        if word.startswith("-"):
            continue
        if word == "bench" and i + 1 < len(out) and out[i + 1] in SUBCOMMANDS:
            out[i : i + 2] = [f"bench {out[i + 1]}"]
        break
    return out


def device_list(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--device", action="append", metavar="DEVICE",
                   help=f"host (default), a device profile, an emulated device or ssh://USER@HOST[:PORT]; repeat {what}")
    p.add_argument("--remote-python", help="python on the device (default: the profile's, else python3)")


def store_flags(p: argparse.ArgumentParser, writes: bool = True) -> None:
    p.add_argument("--store", metavar="PATH_OR_URL",
                   help="results store: a SQLite file or a database URL such as postgresql://USER@HOST/DB "
                        "(default: bench.sqlite in the user's data folder)")
    if writes:
        p.add_argument("--no-store", action="store_true", help="do not append this run to the results store")


def settings_flags(p: argparse.ArgumentParser, iterations: str = "the device profile's, else 100") -> None:
    p.add_argument("--threads", type=int, help="CPU threads (default: the device profile's, else 1)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default: the device profile's, else 10)")
    p.add_argument("--iterations", type=int, help=f"timed runs (default: {iterations})")


def fleet_flags(p: argparse.ArgumentParser) -> None:
    """What a run over several devices adds (bench and verify)."""
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"machines measuring at once (default {DEFAULT_JOBS}); one measurement at a time on each")
    store_flags(p)
    p.add_argument("--html", type=Path, metavar="PATH", help="write the run's HTML page here")


def add_bench_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    be = sub.add_parser("bench", parents=parents,
                        help="latency, cold start and memory of artifacts on devices, with history (`bench history`, "
                             "`bench compare`)")
    be.add_argument("artifact", type=Path, nargs="+", help=".tflite / .onnx / OpenVINO .xml files")
    device_list(be, "to measure on several devices")
    settings_flags(be)
    be.add_argument("--eval", type=Path, help="an eval.npz (x, y) to measure accuracy too")
    be.add_argument("--profile", action="store_true", help="per-op times from each runtime's own profiler")
    fleet_flags(be)
    be.add_argument("--json", action="store_true")
    h = sub.add_parser("bench history", parents=parents, help="stored benchmark runs over time: a table and an HTML plot")
    h.add_argument("--device", help="only this device (as it was named in the run)")
    h.add_argument("--artifact", help="only this artifact: its file name, a path to it, or a sha256 prefix")
    h.add_argument("--limit", type=int, default=200, help="the last N measurements (default 200)")
    store_flags(h, writes=False)
    h.add_argument("--html", type=Path, metavar="PATH", help="where the HTML plot goes (default: in the data folder)")
    h.add_argument("--json", action="store_true")
    c = sub.add_parser("bench compare", parents=parents,
                       help="is CANDIDATE slower (or less accurate) than BASELINE: two stored measurements or two artifacts")
    c.add_argument("baseline", help="a stored measurement's id (see `bench history`) or an artifact file")
    c.add_argument("candidate", help="a stored measurement's id or an artifact file (the same kind as BASELINE)")
    c.add_argument("--threshold", type=float, default=0.05,
                   help="a regression: the latency ratio's whole 95%% interval above 1 + this (default 0.05)")
    c.add_argument("--metric-threshold", type=float, default=0.01,
                   help="a regression: the metric drop's whole 95%% interval above this (default 0.01)")
    c.add_argument("--device", help="where two artifacts are measured now, interleaved (default: this host)")
    c.add_argument("--remote-python", help="python on the device")
    settings_flags(c, "300 per artifact")
    c.add_argument("--eval", type=Path, help="an eval.npz (x, y): compare the two artifacts' accuracy too")
    store_flags(c)
    c.add_argument("--json", action="store_true")


def add_verify_fleet(v: argparse.ArgumentParser) -> None:
    """verify's --device may repeat: with several, the run's artifacts are measured on each (bench's table)."""
    device_list(v, "to measure the run's artifacts on several devices (then its report is left as it is)")
    fleet_flags(v)

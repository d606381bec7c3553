"""Measure many (artifact, device) cells: machines (lanes) concurrently, at most `jobs` at once, and within a
lane one measurement at a time. A device that cannot be reached fails its remaining cells without trying
each (one time-out, not one per artifact); the other devices go on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UsageError


@dataclass
class Job:
    """One measurement: `lane` is the machine, `device` the device (its unreachability is shared)."""

    lane: str
    device: str
    work: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    skipped: bool = False  # not tried: its device had failed to connect before
    done: threading.Event = field(default_factory=threading.Event)


def run_jobs(jobs: Sequence[Job], limit: int, on_done: Callable[[Job], None] | None = None) -> None:
    """Run every job (results and errors land on the jobs themselves); at most `limit` lanes at once, the jobs of
    a lane in the order given. A UsageError (an unreachable board, a refused key) fails the device's later jobs
    with the same error, untried. KeyboardInterrupt stops the lanes after their current job."""
    if limit < 1:
        raise UsageError("--jobs must be at least 1")
    lanes: dict[str, list[Job]] = {}
    for job in jobs:
        lanes.setdefault(job.lane, []).append(job)
    stop = threading.Event()

    def run_lane(lane_jobs: list[Job]) -> None:
        unreachable: dict[str, BaseException] = {}
        for job in lane_jobs:
            if stop.is_set():
                break
            if job.device in unreachable:
                job.error, job.skipped = unreachable[job.device], True
            else:
                try:
                    job.result = job.work()
                except UsageError as err:
                    job.error = unreachable[job.device] = err
                except Exception as err:  # this cell failed; the lane goes on
                    job.error = err
            job.done.set()
            if on_done is not None:
                on_done(job)

    with ThreadPoolExecutor(max_workers=min(limit, max(1, len(lanes)))) as pool:
        futures = [pool.submit(run_lane, lane_jobs) for lane_jobs in lanes.values()]
        try:
            for f in futures:
                f.result()
        except BaseException:
            stop.set()
            raise

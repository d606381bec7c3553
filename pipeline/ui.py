"""Terminal output: progress bars and tables on stderr (stdout stays clean for --json), and a log file. In a
Jupyter notebook rich draws the same bars as a live widget (with ipywidgets; lines without) and the tables as HTML."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

log = logging.getLogger("edgepipe")
PROGRESS_LINE_S = 10.0  # a non-terminal gets a progress line at most this often
log.propagate = False  # the console shows what matters; the log file gets everything


class UI:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, quiet=quiet)
        self.live = self.console.is_terminal or (self.console.is_jupyter and _has_widgets())
        if not self.console.is_terminal and not self.console.is_jupyter:  # logs and CI: do not squeeze tables
            self.console.width = max(self.console.width, 140)
        self._log_handler: logging.Handler | None = None
        self._log_path: Path | None = None
        self.kept_log: Path | None = None  # where keep_log copied the log of a failed run


    def info(self, msg: str) -> None:
        log.info(msg)
        self.console.print(escape(msg), highlight=False)  # "[targets.x]" is text, not markup

    def warn(self, msg: str) -> None:
        log.warning(msg)
        self.console.print(f"[yellow]warning:[/yellow] {escape(msg)}", highlight=False)  # "[targets.x]" is text

    def log_to(self, path: Path | None) -> None:
        """Send the log to `path` (the run's build.log), or stop logging to a file."""
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        if path is not None:
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            self._log_handler = handler
        self._log_path = path

    def keep_log(self, err: BaseException, dest: Path) -> None:
        """Write `err`'s traceback to the open log and copy the log to `dest`, where it outlives the run's
        temporary folder; `kept_log` says where it went (None when no log was open or the copy failed)."""
        if self._log_handler is None or self._log_path is None:
            return
        log.error("unexpected error\n%s", "".join(traceback.format_exception(err)))
        self._log_handler.flush()
        try:
            shutil.copyfile(self._log_path, dest)
        except OSError:
            return
        self.kept_log = dest

    def _progress(self) -> Progress:
        return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=self.console, transient=True, disable=self.quiet)

    @contextlib.contextmanager
    def task(self, label: str, total: int | None = None) -> Iterator[Any]:
        """A progress bar (or a spinner when total is None); yields advance(n=1)."""
        log.info("start: %s", label)
        if not self.live:  # a log, CI or a notebook without ipywidgets: lines, not a bar's blank remains
            self.console.print(f"{label} ...", highlight=False, markup=False)
            yield self._count_lines(label, total)
            log.info("done: %s", label)
            return
        with self._progress() as prog:
            tid = prog.add_task(label, total=total)
            yield lambda n=1: prog.advance(tid, n)
        log.info("done: %s", label)

    def _count_lines(self, label: str, total: int | None) -> Any:
        """advance(n=1) for a log: a "label: done/total" line at most every PROGRESS_LINE_S seconds."""
        state = {"done": 0, "last": time.monotonic()}

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.monotonic()
            if total and state["done"] < total and now - state["last"] >= PROGRESS_LINE_S:
                state["last"] = now
                self.console.print(f"{label}: {int(state['done'])}/{total}", highlight=False, markup=False)

        return advance

    def keras_callbacks(self, label: str, epochs: int) -> list[Any]:
        """A Keras callback that advances a progress bar once per epoch."""
        import keras

        ui = self

        class _Epochs(keras.callbacks.Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                self._cm = ui.task(label, total=epochs)
                self._advance = self._cm.__enter__()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self._advance()
                log.info("%s epoch %d: %s", label, epoch + 1, {k: round(float(v), 4) for k, v in (logs or {}).items()})

            def on_train_end(self, logs: Any = None) -> None:
                self._cm.__exit__(None, None, None)

        return [_Epochs()]


def _has_widgets() -> bool:
    """Whether a notebook can show rich's live progress (it draws into an ipywidgets Output)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def print_json(obj: Any) -> None:
    """A command's --json result on stdout (progress and tables go to stderr)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")

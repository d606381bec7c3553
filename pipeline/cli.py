"""The `edgepipe` command. Exit codes: 0 built and every budget met; 1 built but a budget missed (or a
target failed); 2 bad input or usage, one line on stderr, no traceback, no half-written run; 70 an
internal error (a bug: EX_SOFTWARE of sysexits.h), one line on stderr naming the kept build log."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from pipeline import interrupts
from pipeline.errors import EdgepipeError, UsageError

EXIT_OK, EXIT_BUDGET, EXIT_USAGE = 0, 1, 2
EXIT_INTERNAL = 70  # EX_SOFTWARE; not 3, which targets/runner.py uses for its own errors on the device


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        cmd = " ".join(self.prog.split()[1:])
        self.exit(EXIT_USAGE, f"edgepipe: error: {message} (see edgepipe {cmd + ' ' if cmd else ''}--help)\n")


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="host (default), a device profile or config [devices] name, or ssh://USER@HOST[:PORT]")
    p.add_argument("--remote-python", help="python on the device (default: the profile's, else python3)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgepipe", description="Keras/TensorFlow model in, verified int8 artifacts per device out.")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or tables on stderr")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    quiet = _Parser(add_help=False)  # --quiet also after the subcommand, where users type it
    quiet.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    b = sub.add_parser("build", parents=[quiet], help="compress, quantize and verify for each target")
    b.add_argument("config", nargs="?", default="digits-cnn", help="a TOML config or a built-in example")
    b.add_argument("--target", action="append", dest="targets", metavar="NAME", help="tflite, openvino, tensorrt")
    _device_args(b)
    b.add_argument("-o", "--out", type=Path, help="run directory (default runs/<config-name>)")
    b.add_argument("--no-cache", action="store_true", help="do not reuse cached stage or target outputs")
    b.add_argument("--allow-unsafe-model", action="store_true", help="allow Lambda layers / arbitrary code in models")
    b.add_argument("--json", action="store_true", help="print report.json on stdout")
    v = sub.add_parser("verify", parents=[quiet], help="re-measure the artifacts of a run and rewrite its report")
    v.add_argument("run_dir", type=Path)
    from pipeline.benchrun.args import add_bench_parsers, add_verify_fleet

    add_verify_fleet(v)
    v.add_argument("--json", action="store_true")
    add_bench_parsers(sub, [quiet])
    se = sub.add_parser("search", parents=[quiet], help="multi-objective search over the compression knobs (Optuna)")
    se.add_argument("config", help="a TOML config or a built-in example")
    se.add_argument("--trials", type=int, help="complete trials the study should hold (default: [search] trials)")
    se.add_argument("--storage", help="Optuna RDB URL shared by workers (default: sqlite in OUT/study.db)")
    se.add_argument("--study", help="study name (default: the config name)")
    se.add_argument("-o", "--out", type=Path, help="search directory (default runs/<config-name>-search)")
    i = sub.add_parser("init", parents=[quiet], help="write a commented starter config for a model")
    i.add_argument("model", type=Path, help="a .keras / .h5 file or a SavedModel directory")
    i.add_argument("--data", type=Path, help="an .npz (x_train, y_train, x_test, y_test) to guess scale and metric")
    i.add_argument("-o", "--output", type=Path, help="the config to write (default <model name>.toml; never overwritten)")
    i.add_argument("--allow-unsafe-model", action="store_true", help="allow Lambda layers / arbitrary code in models")
    sub.add_parser("examples", parents=[quiet], help="list the built-in examples")
    r = sub.add_parser("report", parents=[quiet], help="(re)render report.html from report.json")
    r.add_argument("run_dir", type=Path)
    from pipeline.devices import add_device_parser

    add_device_parser(sub, [quiet])
    return p


def one_line(msg: object) -> str:
    """An error message as one line: a path or a value with a line break must not split it."""
    return " ".join(str(msg).splitlines()).strip()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing warnings are not the user's business
    from pipeline.benchrun.args import merge_subcommand

    args = _parser().parse_args(merge_subcommand(sys.argv[1:] if argv is None else argv))
    from pipeline.ui import UI

    ui = UI(quiet=args.quiet)
    restore = interrupts.install()
    try:
        return _dispatch(args, ui)
    except UsageError as err:
        print(f"edgepipe: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except EdgepipeError as err:
        print(f"edgepipe: failed: {one_line(err)}", file=sys.stderr)
        return EXIT_BUDGET
    except interrupts.Terminated:
        print("edgepipe: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("edgepipe: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an unforeseen runtime failure: one line, details in the log
        if os.environ.get("EDGEPIPE_DEBUG"):
            import traceback

            traceback.print_exc()
        print(internal_error_line(err, ui.kept_log), file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        restore()


def internal_error_line(err: Exception, kept_log: Path | None) -> str:
    """The one stderr line of an internal error: what, and where its traceback is."""
    msg = " ".join(str(err).split())[:300]
    where = f"traceback in {kept_log}" if kept_log is not None else "EDGEPIPE_DEBUG=1 shows the traceback"
    return f"edgepipe: internal error: {type(err).__name__}: {msg} ({where}; please report it)"


def _dispatch(args: argparse.Namespace, ui: Any) -> int:
    from pipeline import commands
    from pipeline.benchrun import command, compare_cmd, history, verify_fleet
    from pipeline.devices import cmd_device

    handler = {"build": commands.cmd_build, "verify": verify_fleet.cmd_verify, "bench": command.cmd_bench,
               "bench history": history.cmd_history, "bench compare": compare_cmd.cmd_compare,
               "examples": commands.cmd_examples, "init": commands.cmd_init, "report": commands.cmd_report,
               "search": commands.cmd_search,
               "device": cmd_device}[args.command]
    return handler(args, ui)


if __name__ == "__main__":
    sys.exit(main())

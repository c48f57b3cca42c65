"""Command line: one module per subcommand, dispatched here; bad input exits 2, bugs show a traceback.

    run_bench.py [run] --suite S ...     bench/cli/run.py      (the bare form is the run command)
    run_bench.py compare ...             bench/cli/compare.py
    run_bench.py sweep --grid K=V,...    bench/cli/sweep.py
    run_bench.py data                    bench/cli/data.py
    run_bench.py list heads|suites       bench/cli/listing.py
    run_bench.py demo                    bench/cli/demo.py

Exit codes: 0 success; 1 a regression against the baseline, a head failed, or a bug in simbench (its
traceback is printed); 2 bad input (unknown name, bad config, missing file), reported in one message that
says how to fix it, before any work; 130 interrupted (finished cells are kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli import compare, data, demo, listing, run, sweep, tune
from bench.cli.common import DEFAULT_OUT, EXIT_USAGE, UsageError, configure_logging, import_head_module, log
from bench.core.errors import UserError

__all__ = ["DEFAULT_OUT", "UsageError", "import_head_module", "main", "parser"]

COMMANDS = {
    "run": (run, "train and score heads on a suite, then rebuild the leaderboard (the default command)"),
    "compare": (compare, "paired comparison of heads from their saved per-query outcomes (no rerun)"),
    "sweep": (sweep, sweep.DESCRIPTION),
    "tune": (tune, tune.DESCRIPTION),
    "data": (data, "which datasets are ready under the data root, and the layout of the rest"),
    "list": (listing, "list the registered heads (with every option) or suites"),
    "demo": (demo, "the real-data path end to end on generated data and a random tiny backbone (about a minute)"),
}
EXAMPLES = """examples:
  run_bench.py                                          the synthetic suite, every head
  run_bench.py --suite retrieval --backbone ViT-B-32:openai --data-root /data
  run_bench.py compare --suite synthetic --heads kme_rbf,cosine
  run_bench.py sweep --grid train.lr=0.0005,0.002,0.008
  run_bench.py tune --heads cosine,kme_proto --trials 8   equal-budget tuning on validation data
  run_bench.py list heads
  run_bench.py demo                                     the real-data path on generated data, about a minute
Without a command, the arguments are the run command's: `run_bench.py run --help` lists them.
"""
BUG_REPORT = (
    "This is a bug in simbench, not a problem with your input: please open an issue with the traceback "
    "above, the command you ran and the output of `pip freeze`."
)


def _prog() -> str:
    return "simbench" if Path(sys.argv[0]).name == "simbench" else "run_bench.py"


def parser() -> argparse.ArgumentParser:
    """The whole command line: a subcommand and its flags."""
    top = argparse.ArgumentParser(
        prog=_prog(),
        description="Compare similarity heads for CLIP-style contrastive learning under one protocol.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        module.add_arguments(sub)
    return top


def _report_bug(exc_type, exc, tb) -> None:
    """Uncaught exceptions are simbench's bugs (bad input never gets this far): the traceback, then one
    line saying so; the interpreter exits 1."""
    sys.__excepthook__(exc_type, exc, tb)
    if not issubclass(exc_type, KeyboardInterrupt):
        print(BUG_REPORT, file=sys.stderr)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: atomic writes clean up, finished cells stay


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from bench.core import distributed, snapshot

    sys.excepthook = _report_bug
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not argv[:1] or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]  # the bare form: run_bench.py --suite ...
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return EXIT_USAGE
    args.argv = argv[1:]
    configure_logging(args.quiet, args.verbose)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        with snapshot.frozen():  # every cell keyed by the code and commit the command started with
            return COMMANDS[args.command][0].command(args)
    except UserError as exc:
        if distributed.is_main():
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.warning("interrupted: finished cells are saved; run the same command again to resume.")
        return 130
    finally:
        distributed.shutdown()

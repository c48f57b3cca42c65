"""What every subcommand shares: exit codes, the user-error type, flags, head modules, logging."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from bench.core.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_OUT = "outputs"  # a user's runs; results/ is the committed reference, rewritten only on purpose
log = logging.getLogger("simbench")


class UsageError(UserError):
    """Bad input found by the command line itself; printed as one line, exit 2."""


class _Console(logging.Handler):
    """Progress lines (info, debug) to stdout and warnings to stderr, looked up when each line is written
    (so a caller that swaps sys.stdout, such as a test capturing output, sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        stream.write(self.format(record) + "\n")
        stream.flush()


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """The one place logging is configured: called once per command, replacing any earlier setup."""
    log.handlers[:] = [_Console()]
    log.handlers[0].setFormatter(logging.Formatter("%(message)s"))
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("--quiet", "-q", action="store_true", help="print only warnings, errors and the result")
    loud.add_argument("--verbose", "-v", action="store_true", help="print debugging detail too")


def add_head_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", default=None, help="comma-separated heads (default: every registered head)")
    p.add_argument(
        "--head-module",
        action="append",
        default=[],
        metavar="FILE_OR_MODULE",
        help="import this .py file or dotted module first, so the heads it registers can run (repeatable)",
    )


def add_config_flags(p: argparse.ArgumentParser, repeats: bool = True) -> None:
    """The flags that set config (layer 5 of bench/run/config.py's precedence), and the device.
    ``repeats=False``: a command with a --repeats of its own (tune: test runs of each chosen setting)."""
    p.add_argument("--config", default=None, help="YAML file with seed / repeats / train / heads / suites sections")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    if repeats:
        p.add_argument(
            "--repeats",
            type=int,
            default=None,
            help="run every cell N times (config: repeats), each varying the seed, random features and the "
            "synthetic world; the leaderboard shows means, intervals and n",
        )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument(
        "--backbone",
        default=None,
        metavar="NAME[:PRETRAINED]",
        help="open_clip model name or config JSON, optionally :tag or :checkpoint (real-data suites)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="datasets folder (default: $SIMBENCH_DATA, else ./data), one folder per dataset",
    )
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="leave undecodable images out (listed in the result file) instead of failing the run",
    )
    p.add_argument("--force", action="store_true", help="recompute cells whose results already exist")


def head_list(arg: str | None) -> list[str] | None:
    return None if arg is None else [h.strip() for h in arg.split(",") if h.strip()]


def flags(args) -> dict:
    """The config-setting flags that were given, for bench/run/config.py's ``with_flags``."""
    return {
        "seed": args.seed,
        "repeats": getattr(args, "repeats", None),
        "backbone": args.backbone,
        "data_root": args.data_root,
        "skip_corrupt": args.skip_corrupt,
    }


def file_config(args) -> dict:
    from bench.run import config

    return config.load_yaml(args.config)


def import_head_module(spec: str) -> None:
    """Import a user's head module by file path or dotted name; errors name the file and the cause."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise UsageError(f"--head-module {spec!r}: no such file.")
            module_spec = importlib.util.spec_from_file_location(f"simbench_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 (a user's file can raise anything; say which file and what)
        raise UsageError(f"--head-module {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc

"""Result files: one self-describing JSON per (suite, head) run, written atomically.

A leaderboard, a plot or a regression check is built from these files alone, so each one carries
everything needed to judge whether two numbers are comparable: schema, code and library versions,
the resolved config and its hash, the test-set identity, seed, timings, memory and device.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bench.core import atomic, hashing, records
from bench.core.records import ResultFileError, ResultRecord, load_checked_npz, read  # noqa: F401 (re-exported)

_warn = logging.getLogger("simbench").warning  # the CLI configures where it goes (bench/cli/common.py)


def suite_dir(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / "runs" / suite


def stem(head: str, repeat: int = 0) -> str:
    """A cell's file name: the head's name, and for repeats after the first, which one."""
    return head if not repeat else f"{head}.repeat{repeat}"


def run_path(out_dir: Path, suite: str, head: str, repeat: int = 0) -> Path:
    return suite_dir(out_dir, suite) / f"{stem(head, repeat)}.json"


def weights_path(out_dir: Path, suite: str, head: str, repeat: int = 0) -> Path:
    return Path(out_dir) / "heads" / suite / f"{stem(head, repeat)}.safetensors"


def outcomes_path(out_dir: Path, suite: str, head: str, repeat: int = 0) -> Path:
    return suite_dir(out_dir, suite) / f"{stem(head, repeat)}.outcomes.npz"


def write(out_dir: Path, record: ResultRecord, outcomes: dict | None = None, spec: dict | None = None) -> Path:
    """The result JSON, and beside it the per-query outcomes (npz) when there are any. The JSON, written
    last, names the outcome file's sha256, so a stale or foreign outcome file is never read as its own."""
    if isinstance(record, dict):  # a hand-made record (tests, tools) is validated like a file that was read
        record = records.from_dict(record, "the record to write")
    suite, head, repeat = record.suite.name, record.head.name, record.repeat
    npz = outcomes_path(out_dir, suite, head, repeat)
    if outcomes:
        with atomic.atomic_path(npz) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: np.asarray(v) for k, v in outcomes.items()})
        record.outcomes = records.OutcomeRef(
            file=npz.name, sha256=hashing.file_sha256(npz), spec=spec or {}, arrays=sorted(outcomes)
        )
    else:
        record.outcomes = None
        npz.unlink(missing_ok=True)
    path = run_path(out_dir, suite, head, repeat)
    atomic.write_json(path, record.to_dict())
    return path


def read_outcomes(out_dir: Path, record: ResultRecord) -> dict | None:
    """The per-query arrays of ``record`` (None if it has none), checksum checked."""
    return records.outcome_arrays(suite_dir(out_dir, record.suite.name), record)


def load_all(out_dir: Path, warn=_warn) -> list[ResultRecord]:
    """Every valid result file under ``out_dir/runs``; the others are named and left out."""
    found = []
    for path in sorted((Path(out_dir) / "runs").glob("*/*.json")):
        try:
            found.append(read(path))
        except ResultFileError as exc:
            warn(f"warning: {exc} Left out.")
    return found

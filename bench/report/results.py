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
from bench.eval import uncertainty

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
            arrays = {k: np.asarray(v) for k, v in outcomes.items()}
            np.savez_compressed(fh, **arrays, **{records.SPEC_ARRAY: records.spec_array(spec or {})})
        record.outcomes = records.OutcomeRef(
            file=npz.name, sha256=hashing.file_sha256(npz), spec=spec or {}, arrays=sorted(outcomes)
        )
    else:
        record.outcomes = None
        npz.unlink(missing_ok=True)
    path = run_path(out_dir, suite, head, repeat)
    atomic.write_json(path, record.to_dict())
    return path


def _agrees(claimed: float, computed: float) -> bool:
    return bool(np.isfinite(computed)) and abs(claimed - computed) <= 1e-6 * max(1.0, abs(computed))


def check_metrics(record: ResultRecord, arrays: dict, where: str) -> None:
    """Every metric with a per-query form must equal its recomputation from the outcome arrays: a result
    whose number was edited (or written by other code) is refused, never shown or reused."""
    try:
        ests = uncertainty.estimators(arrays, record.outcomes.spec)
        computed = {m: float(e.point()) for m, e in ests.items()}
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ResultFileError(
            f"{where}: its outcome spec does not fit its outcome file ({type(exc).__name__}: {exc}); "
            "rerun that head with --force."
        ) from None
    for metric, value in computed.items():
        claimed = record.metrics.get(metric)
        if claimed is not None and not _agrees(float(claimed), value):
            raise ResultFileError(
                f"{where} claims {metric} = {claimed!r}, but its own per-query outcomes give {value!r}: the "
                "file was edited or not written by this simbench. Delete it and rerun that head."
            )


def read_outcomes(out_dir: Path, record: ResultRecord) -> dict | None:
    """The per-query arrays of ``record`` (None if it has none): checksum and spec checked, and every metric
    with a per-query form recomputed from them and compared with the record's."""
    arrays = records.outcome_arrays(suite_dir(out_dir, record.suite.name), record)
    if arrays is not None:
        check_metrics(record, arrays, f"the result of {record.head.name} ({record.suite.name}, repeat {record.repeat})")
    return arrays


def check_place(path: Path, record: ResultRecord) -> None:
    """A result counts only at the path its own content names: a copy (``cosine.bak.json``, a backup
    of another run) is never a second repeat or another head's row."""
    expected = run_path(Path(path).parents[2], record.suite.name, record.head.name, record.repeat)
    if Path(path).name != expected.name or Path(path).parent.name != record.suite.name:
        raise ResultFileError(
            f"{str(path)!r} holds the result of {record.head.name} (suite {record.suite.name}, repeat "
            f"{record.repeat}), whose place is {expected.name!r} in runs/{record.suite.name}/: it is a copy or "
            "was moved. Move it out of runs/ (or delete it)."
        )


def load_all(out_dir: Path, warn=_warn) -> list[ResultRecord]:
    """Every valid result file under ``out_dir/runs``: read at its own place, with its outcome file's
    checksum and its metrics' recomputation checked. The others are named and left out."""
    found = []
    for path in sorted((Path(out_dir) / "runs").glob("*/*.json")):
        if path.name.startswith("_"):  # the suite's own index files (last_run.py), not results
            continue
        try:
            record = read(path)
            check_place(path, record)
            read_outcomes(out_dir, record)
            found.append(record)
        except ResultFileError as exc:
            warn(f"warning: {exc} Left out.")
    return found

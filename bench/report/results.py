"""Result files: one self-describing JSON per (suite, head) run, written atomically.

A leaderboard, a plot or a regression check is built from these files alone, so each one carries
everything needed to judge whether two numbers are comparable: schema, code and library versions,
the resolved config and its hash, the test-set identity, seed, timings, memory and device.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench import SCHEMA_VERSION
import numpy as np

from bench.core import atomic, hashing


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


def write(out_dir: Path, record: dict, outcomes: dict | None = None, spec: dict | None = None) -> Path:
    """The result JSON, and beside it the per-query outcomes (npz) when there are any. The JSON, written
    last, names the outcome file's sha256, so a stale or foreign outcome file is never read as its own."""
    suite, head, repeat = record["suite"]["name"], record["head"]["name"], record.get("repeat", 0)
    npz = outcomes_path(out_dir, suite, head, repeat)
    if outcomes:
        with atomic.atomic_path(npz) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: np.asarray(v) for k, v in outcomes.items()})
        record["outcomes"] = {"file": npz.name, "sha256": hashing.file_sha256(npz), "spec": spec or {},
                              "arrays": sorted(outcomes)}
    else:
        record.pop("outcomes", None)
        npz.unlink(missing_ok=True)
    path = run_path(out_dir, suite, head, repeat)
    atomic.write_json(path, record)
    return path


def read_outcomes(out_dir: Path, record: dict) -> dict | None:
    """The per-query arrays of ``record`` (None if it has none); an outcome file that is missing or whose
    content is not the one the record names raises ``ResultFileError``."""
    meta = record.get("outcomes")
    if not meta:
        return None
    path = suite_dir(out_dir, record["suite"]["name"]) / meta["file"]
    arrays = load_checked_npz(path, meta["sha256"])
    if arrays is None:
        raise ResultFileError(f"{path} is missing or is not the outcome file {record['head']['name']}'s result names "
                              "(checksum mismatch); rerun that head with --force.")
    return arrays


def load_checked_npz(path: Path, sha256: str) -> dict | None:
    """The arrays of an outcome file if its content is the one named by ``sha256``; None otherwise."""
    if not Path(path).is_file() or hashing.file_sha256(path) != sha256:
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


class ResultFileError(ValueError):
    pass


def read(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"result file {str(path)!r} cannot be read ({exc}); delete it and rerun that head.") from None
    if not isinstance(record, dict):
        raise ResultFileError(f"result file {str(path)!r} holds {type(record).__name__}, not a result; delete it and "
                              "rerun that head.")
    for key in ("schema_version", "suite", "head", "metrics", "status", "config", "created_utc"):
        if key not in record:
            raise ResultFileError(f"result file {str(path)!r} lacks {key!r}; it was not written by simbench.")
    return record


def load_all(out_dir: Path, warn=print) -> list[dict]:
    """Every readable result file under ``out_dir/runs``; unreadable ones are named and skipped."""
    records = []
    for path in sorted((Path(out_dir) / "runs").glob("*/*.json")):
        try:
            record = read(path)
        except ResultFileError as exc:
            warn(f"warning: {exc}")
            continue
        if record["schema_version"] != SCHEMA_VERSION:
            warn(f"warning: {path} has schema_version {record['schema_version']} (current {SCHEMA_VERSION}); left out.")
            continue
        records.append(record)
    return records

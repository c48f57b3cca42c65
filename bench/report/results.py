"""Result files: one self-describing JSON per (suite, head) run, written atomically.

A leaderboard, a plot or a regression check is built from these files alone, so each one carries
everything needed to judge whether two numbers are comparable: schema, code and library versions,
the resolved config and its hash, the test-set identity, seed, timings, memory and device.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench import SCHEMA_VERSION
from bench.core import atomic


def suite_dir(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / "runs" / suite


def run_path(out_dir: Path, suite: str, head: str) -> Path:
    return suite_dir(out_dir, suite) / f"{head}.json"


def weights_path(out_dir: Path, suite: str, head: str) -> Path:
    return Path(out_dir) / "heads" / suite / f"{head}.safetensors"


def write(out_dir: Path, record: dict) -> Path:
    path = run_path(out_dir, record["suite"]["name"], record["head"]["name"])
    atomic.write_json(path, record)
    return path


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

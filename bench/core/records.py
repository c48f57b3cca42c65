"""The result record: what one cell (a head, or a suite's reference row) measured, and everything
needed to judge whether two records are comparable.

This module owns the schema. The runner builds a ``ResultRecord``; every reader (reuse, leaderboard,
compare, regression check, sweep) gets one only through ``from_dict``/``read``, which check the
schema version (upgrading older ones), every field's type and, through ``outcome_arrays``, the
checksum of the per-query outcome file. A file that does not validate is named, never half-read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core import hashing
from bench.core.errors import UserError

SCHEMA_VERSION = 2  # 2: cell keys (config, code, data, libraries, device type), resolved head options
STATUSES = ("ok", "failed", "skipped")


class ResultFileError(UserError):
    """A result or outcome file that cannot be trusted; the message names it and how to fix it."""


@dataclass
class SuiteInfo:
    name: str
    version: int
    main_metric: str
    metric_directions: list  # [[metric, "higher" | "lower"], ...] in the suite's declared order
    headline_metrics: list = field(default_factory=list)
    test_set: dict = field(default_factory=dict)
    report: dict | None = None  # how boards lay out the metrics (summary, tables); None: one table of all

    @property
    def higher_is_better(self) -> dict[str, bool]:
        """Metric -> True when higher is better, in the suite's declared order."""
        return {m: d == "higher" for m, d in self.metric_directions}


@dataclass
class HeadInfo:
    name: str
    version: int
    kind: str = "head"  # head | reference
    trainable: bool = True
    description: str = ""
    options: dict = field(default_factory=dict)

    @property
    def is_reference(self) -> bool:
        return self.kind == "reference"


@dataclass
class CellConfig:
    resolved: dict
    hash: str
    protocol_hash: str
    key: str | None = None  # of everything the number depends on; None: never reused


@dataclass
class OutcomeRef:
    file: str  # beside the record
    sha256: str  # of that file's bytes
    spec: dict  # how each metric is computed from the arrays (bench/eval/uncertainty.py)
    arrays: list


@dataclass
class RepeatGroup:
    """A board row made of several repeats: not stored, built by the leaderboard."""

    n: int
    sd: dict
    records: list


@dataclass
class ResultRecord:
    schema_version: int
    created_utc: str
    status: str
    suite: SuiteInfo
    head: HeadInfo
    config: CellConfig
    metrics: dict  # metric -> float, or None where undefined (listed in undefined_metrics)
    package_version: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    error: str | None = None
    identity: dict = field(default_factory=dict)
    seed: int = 0
    repeat: int = 0
    undefined_metrics: list = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    device: str = ""
    libraries: dict = field(default_factory=dict)
    diagnostics: dict | None = None
    trained_loss: dict | None = None
    evaluation_details: dict | None = None
    outcomes: OutcomeRef | None = None
    curve: list | None = None  # [{step, train_loss, val}]: the learning curve at each evaluation point
    convergence: dict | None = None  # validation metric, best step, early stop, converged (bench/run/train.py)
    degenerate: str | None = None  # why its scores carry no ranking (bench/eval/degenerate.py); never best
    repeats: RepeatGroup | None = None  # board rows only; never written

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("repeats")
        if out["suite"]["report"] is None:
            out["suite"].pop("report")
        for optional in (
            "diagnostics",
            "trained_loss",
            "evaluation_details",
            "outcomes",
            "curve",
            "convergence",
            "degenerate",
        ):
            if out[optional] is None:
                out.pop(optional)
        return out

    @property
    def directions(self) -> dict[str, bool]:
        return self.suite.higher_is_better

    @property
    def not_converged(self) -> bool:
        """True when the validation metric still improved by more than the suite's tolerance at the end."""
        return bool(self.convergence) and self.convergence.get("converged") is False

    @property
    def contestant(self) -> bool:
        """A row that may be called best: it ran, is not a reference row, and its scores rank."""
        group = self.repeats.records if self.repeats else [self]
        return self.status == "ok" and self.head.kind != "reference" and not any(g.degenerate for g in group)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)


# --- reading -------------------------------------------------------------------------------------------

_SECTIONS = {"suite": SuiteInfo, "head": HeadInfo, "config": CellConfig, "outcomes": OutcomeRef}
_TYPES: dict[str, tuple] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "dict": (dict,),
    "list": (list,),
}


def _expected(annotation: str) -> tuple[tuple, bool]:
    """(python types, None allowed) for a dataclass field's annotation string such as ``'dict | None'``."""
    parts = [p.strip() for p in annotation.split("|")]
    nullable = "None" in parts
    types = tuple(t for p in parts if p in _TYPES for t in _TYPES[p])
    return types, nullable


def _check_fields(cls, data: dict, where: str) -> dict:
    if not isinstance(data, dict):
        raise ResultFileError(f"{where} must be a mapping, got {type(data).__name__}")
    out = {}
    for f in dataclasses.fields(cls):
        if f.name == "repeats":
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in data:
            if required:
                raise ResultFileError(f"lacks {where}.{f.name}")
            continue
        value = data[f.name]
        if f.name in _SECTIONS:
            if value is None and "None" not in str(f.type):
                raise ResultFileError(f"{where}.{f.name} is null, not a mapping")
            sub = _SECTIONS[f.name]
            out[f.name] = None if value is None else sub(**_check_fields(sub, value, f"{where}.{f.name}"))
            continue
        types, nullable = _expected(str(f.type))
        if value is None and nullable:
            out[f.name] = None
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        if types and (not isinstance(value, types) or wrong_bool):
            raise ResultFileError(f"{where}.{f.name} is {value!r}, not {f.type}")
        out[f.name] = value
    return out


def _check_values(record: ResultRecord) -> None:
    if record.status not in STATUSES:
        raise ResultFileError(f"status is {record.status!r}, not one of {', '.join(STATUSES)}")
    for metric, value in record.metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ResultFileError(f"metrics.{metric} is {value!r}, not a number or null")
    for pair in record.suite.metric_directions:
        if not (isinstance(pair, list) and len(pair) == 2 and pair[1] in ("higher", "lower")):
            raise ResultFileError(f"suite.metric_directions holds {pair!r}, not [metric, 'higher' | 'lower']")


def _upgrade_1(data: dict) -> dict:
    """Schema 1 had no cell key, identity or repeats: such a record is shown, never reused."""
    data = dict(data, schema_version=2)
    data["config"] = {**data.get("config", {}), "key": None}
    data.setdefault("identity", {})
    data.setdefault("repeat", 0)
    return data


UPGRADES = {1: _upgrade_1}  # version -> a function returning the record at version + 1


def from_dict(data: Any, where: str = "result") -> ResultRecord:
    """A validated record; raises ``ResultFileError`` naming ``where`` and the first problem."""
    if not isinstance(data, dict):
        raise ResultFileError(f"{where} holds {type(data).__name__}, not a result; delete it and rerun that head.")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultFileError(f"{where} lacks schema_version; it was not written by simbench.")
    if version > SCHEMA_VERSION or (version < SCHEMA_VERSION and version not in UPGRADES):
        raise ResultFileError(
            f"{where} has schema_version {version} (current {SCHEMA_VERSION}), which this version "
            "of simbench cannot read; rerun that head."
        )
    while version < SCHEMA_VERSION:
        data, version = UPGRADES[version](data), version + 1
    try:
        record = ResultRecord(**_check_fields(ResultRecord, data, "record"))
        _check_values(record)
    except ResultFileError as exc:
        raise ResultFileError(
            f"{where} is not a valid result ({exc}); it was not written by this simbench or was "
            "edited: delete it and rerun that head."
        ) from None
    return record


def read(path: Path) -> ResultRecord:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(
            f"result file {str(path)!r} cannot be read ({exc}); delete it and rerun that head."
        ) from None
    return from_dict(data, f"result file {str(path)!r}")


SPEC_ARRAY = "__spec__"  # the outcome spec, inside the checksummed file: an edited JSON spec is caught too


def spec_array(spec: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(spec, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def load_checked_npz(path: Path, sha256: str) -> dict | None:
    """The arrays of an outcome file if its content is the one named by ``sha256``; None otherwise."""
    if not Path(path).is_file() or hashing.file_sha256(path) != sha256:
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def outcome_arrays(folder: Path, record: ResultRecord) -> dict | None:
    """The per-query arrays of ``record``, whose outcome file lies in ``folder`` (None if it has none). A
    file that is missing, whose content is not the one the record names, or whose spec is not the record's
    raises ``ResultFileError`` (bench/report/results.py also recomputes the metrics from them)."""
    if record.outcomes is None:
        return None
    path = Path(folder) / record.outcomes.file
    arrays = load_checked_npz(path, record.outcomes.sha256)
    if arrays is None:
        raise ResultFileError(
            f"{path} is missing or is not the outcome file {record.head.name}'s result names "
            "(checksum mismatch); rerun that head with --force."
        )
    stored = arrays.pop(SPEC_ARRAY, None)
    if stored is not None and json.loads(bytes(stored).decode("utf-8")) != record.outcomes.spec:
        raise ResultFileError(
            f"the result beside {path} states another outcome spec than the file holds: it was edited. "
            "Delete it and rerun that head."
        )
    return arrays

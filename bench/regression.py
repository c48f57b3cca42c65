"""Regression check: compare a run's metrics with a committed baseline, per-metric tolerances.

The baseline is written by ``--update-baseline`` from real result files (never typed by hand)
and keeps its tolerances across updates. A run is only comparable with a baseline made under the
same protocol; a mismatch is an error that says so, not a wall of false regressions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench import SCHEMA_VERSION, atomic

DEFAULT_TOLERANCE = 0.02
# Unbounded or scale-dependent metrics move more between machines than fractions do.
METRIC_TOLERANCES = {"pmi_rmse": 0.05, "pmi_row_kl": 0.03, "infonce_excess": 0.03}


class BaselineError(ValueError):
    pass


@dataclass
class Regression:
    head: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float
    direction: str

    @property
    def change(self):
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"baseline {str(path)!r} does not exist; create it with --update-baseline.")
    try:
        base = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline {str(path)!r} is not valid JSON ({exc}); regenerate it with --update-baseline.") from None
    for key in ("schema_version", "suite", "suite_version", "protocol_hash", "scores", "metric_directions"):
        if key not in base:
            raise BaselineError(f"baseline {str(path)!r} lacks {key!r}; regenerate it with --update-baseline.")
    return base


def make(records: list[dict], previous: dict | None = None) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    if not ok or len(ok) != len(records):
        failed = [r["head"]["name"] for r in records if r["status"] != "ok"]
        raise BaselineError(f"refusing to write a baseline from a run with failed heads: {', '.join(failed) or 'no results'}.")
    first = ok[0]
    tolerances = dict(previous.get("tolerances", {})) if previous else dict(METRIC_TOLERANCES)
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": first["suite"]["name"],
        "suite_version": first["suite"]["version"],
        "protocol_hash": first["config"]["protocol_hash"],
        "generated_by": {"git_commit": first.get("git_commit"), "created_utc": first["created_utc"]},
        "default_tolerance": previous.get("default_tolerance", DEFAULT_TOLERANCE) if previous else DEFAULT_TOLERANCE,
        "tolerances": tolerances,
        "metric_directions": dict(first["suite"]["metric_directions"]),
        "scores": {r["head"]["name"]: r["metrics"] for r in sorted(ok, key=lambda r: r["head"]["name"])},
    }


def write(path: Path, baseline: dict) -> None:
    atomic.write_json(path, baseline)


def compare(records: list[dict], baseline: dict) -> list[Regression]:
    current = {r["head"]["name"]: r for r in records}
    if records and records[0]["suite"]["name"] != baseline["suite"]:
        raise BaselineError(f"baseline is for suite {baseline['suite']!r}, the run is {records[0]['suite']['name']!r}.")
    for r in records:
        if r["config"]["protocol_hash"] != baseline["protocol_hash"] or r["suite"]["version"] != baseline["suite_version"]:
            raise BaselineError(
                f"the run's protocol ({r['config']['protocol_hash']}, suite v{r['suite']['version']}) differs from the "
                f"baseline's ({baseline['protocol_hash']}, suite v{baseline['suite_version']}): scores are not comparable. "
                f"Run with the baseline's config, or rewrite it on purpose with --update-baseline."
            )
    found = []
    for head, base_metrics in baseline["scores"].items():
        rec = current.get(head)
        for metric, base_value in base_metrics.items():
            tol = baseline["tolerances"].get(metric, baseline["default_tolerance"])
            direction = baseline["metric_directions"].get(metric, "higher")
            value = None if rec is None or rec["status"] != "ok" else rec["metrics"].get(metric)
            if value is None:
                found.append(Regression(head, metric, base_value, None, tol, direction))
                continue
            drop = (base_value - value) if direction == "higher" else (value - base_value)
            if drop > tol:
                found.append(Regression(head, metric, base_value, value, tol, direction))
    return found


def report(regressions: list[Regression]) -> str:
    rows = [{"head": r.head, "metric": r.metric, "better": r.direction, "baseline": r.baseline,
             "current": "missing/failed" if r.current is None else r.current,
             "change": "" if r.change is None else r.change, "tolerance": r.tolerance} for r in regressions]
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f")

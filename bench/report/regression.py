"""Regression check: compare a run's metrics with a committed baseline, per-metric tolerances.

The baseline is written by ``--update-baseline`` from real result files (never typed by hand)
and keeps its tolerances across updates. A run is only comparable with a baseline made under the
same protocol; a mismatch is an error that says so, not a wall of false regressions.

Two rules. ``exact`` (what CPU runs, which are bit-identical, can afford): a metric regresses when
it is worse than the baseline by more than its tolerance. ``interval`` (the default, for runs that
are not bit-identical, e.g. on a GPU): where the baseline keeps its heads' per-query outcomes, a
metric regresses when the whole paired 95% interval of (new - baseline) is worse than its tolerance;
metrics without per-query outcomes fall back to the exact rule.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.core import atomic
from bench.core.errors import UserError
from bench.core.records import SCHEMA_VERSION, ResultRecord
from bench.eval import uncertainty
from bench.report import results

DEFAULT_TOLERANCE = 0.02
# Unbounded or scale-dependent metrics move more between machines than fractions do.
METRIC_TOLERANCES = {"pmi_rmse": 0.05, "pmi_row_kl": 0.03, "infonce_excess": 0.03}


class BaselineError(UserError):
    pass


@dataclass
class Regression:
    head: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float
    direction: str
    interval: tuple[float, float] | None = None  # paired 95% interval of current - baseline (interval rule)

    @property
    def change(self):
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


def load(path: Path, for_update: bool = False) -> dict:
    """A baseline, validated. ``for_update``: an older schema is accepted, since the merge in ``make``
    keeps nothing from a baseline made under another protocol."""
    path = Path(path)
    if path.is_dir():
        raise BaselineError(
            f"baseline {str(path)!r} is a folder; pass the baseline's JSON file "
            "(e.g. results/baselines/synthetic.json)."
        )
    if not path.is_file():
        raise BaselineError(f"baseline {str(path)!r} does not exist; create it with --update-baseline.")
    try:
        base = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(
            f"baseline {str(path)!r} is not valid JSON ({exc}); regenerate it with --update-baseline."
        ) from None
    if not isinstance(base, dict):
        raise BaselineError(
            f"baseline {str(path)!r} holds {type(base).__name__}, not a baseline; regenerate it with --update-baseline."
        )
    for key in ("schema_version", "suite", "suite_version", "protocol_hash", "scores", "metric_directions"):
        if key not in base:
            raise BaselineError(f"baseline {str(path)!r} lacks {key!r}; regenerate it with --update-baseline.")
    if not isinstance(base["scores"], dict) or not all(isinstance(v, dict) for v in base["scores"].values()):
        raise BaselineError(
            f"baseline {str(path)!r}: 'scores' must map each head to its metrics; regenerate it with --update-baseline."
        )
    if base["schema_version"] != SCHEMA_VERSION and not for_update:
        raise BaselineError(
            f"baseline {str(path)!r} has schema version {base['schema_version']} (this simbench writes "
            f"{SCHEMA_VERSION}); regenerate it with --update-baseline."
        )
    return base


def make(records: list[ResultRecord], previous: dict | None = None) -> tuple[dict, list[str]]:
    """A baseline from this run's records, merged into ``previous``: a head not in this run keeps its
    entry (returned as ``kept``), but only when both were made under the same protocol."""
    records = [r for r in records if r.status != "skipped"]  # a head the suite cannot measure has no baseline
    ok = [r for r in records if r.status == "ok"]
    if not ok or len(ok) != len(records):
        failed = [r.head.name for r in records if r.status != "ok"]
        raise BaselineError(
            f"refusing to write a baseline from a run with failed heads: {', '.join(failed) or 'no results'}."
        )
    names = [r.head.name for r in ok]
    if len(set(names)) != len(names):
        raise BaselineError("a baseline holds one run per head; this run has repeats (use --repeats 1).")
    first = ok[0]
    scores = {r.head.name: r.metrics for r in ok}
    kept = sorted(set(previous["scores"]) - set(scores)) if previous else []
    references = {r.head.name for r in ok if r.head.is_reference}  # rows every run makes (oracle): not --heads
    if kept and (
        previous["protocol_hash"] != first.config.protocol_hash
        or previous["suite_version"] != first.suite.version
        or previous["suite"] != first.suite.name
    ):
        raise BaselineError(
            f"the baseline holds {', '.join(kept)}, which this run did not compute, under another protocol "
            f"({previous['protocol_hash']} vs this run's {first.config.protocol_hash}); keeping them would mix "
            f"protocols and dropping them would lose them. Rerun with every head it holds "
            f"(--heads {','.join(sorted((set(previous['scores']) | set(scores)) - references))}), or write to a new "
            "baseline file."
        )
    options = {r.head.name: r.head.options for r in ok}
    for head in kept:
        scores[head] = previous["scores"][head]
        if head in previous.get("head_options", {}):
            options[head] = previous["head_options"][head]
    tolerances = dict(previous.get("tolerances", {})) if previous else dict(METRIC_TOLERANCES)
    baseline = {
        "schema_version": SCHEMA_VERSION,
        "suite": first.suite.name,
        "suite_version": first.suite.version,
        "protocol_hash": first.config.protocol_hash,
        "protocol": {k: v for k, v in first.config.resolved.items() if k != "head_options"},
        "generated_by": {"git_commit": first.git_commit, "created_utc": first.created_utc, "kept_from_previous": kept},
        "default_tolerance": previous.get("default_tolerance", DEFAULT_TOLERANCE) if previous else DEFAULT_TOLERANCE,
        "tolerances": tolerances,
        "metric_directions": dict(first.suite.metric_directions),
        "scores": {head: scores[head] for head in sorted(scores)},
        # every head's resolved options: a run with other options is refused, not judged against these scores
        "head_options": {head: options[head] for head in sorted(options)},
    }
    return baseline, kept


def outcomes_folder(path: Path) -> Path:
    """Where a baseline keeps its heads' per-query outcomes: ``NAME.outcomes/`` beside ``NAME.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.outcomes")


def attach_outcomes(
    baseline: dict, path: Path, out_dir: Path, records: list[ResultRecord], previous: dict | None
) -> None:
    """Copy each run head's outcome file beside the baseline and name it there with its sha256; heads kept
    from the previous baseline keep theirs."""
    folder = outcomes_folder(path)
    entries = {
        h: e
        for h, e in ((previous or {}).get("outcomes") or {}).items()
        if h in baseline["generated_by"]["kept_from_previous"]
    }
    for r in records:
        head = r.head.name
        entries.pop(head, None)
        if not r.outcomes:
            continue
        source = results.outcomes_path(out_dir, r.suite.name, head, r.repeat)
        with atomic.atomic_path(folder / f"{head}.npz") as tmp:
            shutil.copyfile(source, tmp)
        entries[head] = {"file": f"{folder.name}/{head}.npz", "sha256": r.outcomes.sha256, "spec": r.outcomes.spec}
    baseline["outcomes"] = {h: entries[h] for h in sorted(entries)}


def _baseline_estimators(baseline: dict, path: Path | None, head: str):
    entry = (baseline.get("outcomes") or {}).get(head)
    if not entry or path is None:
        return None
    npz = Path(path).parent / entry["file"]
    arrays = results.load_checked_npz(npz, entry["sha256"])
    if arrays is None:
        raise BaselineError(
            f"{npz} is missing or altered (checksum mismatch); regenerate the baseline with "
            "--update-baseline, or use --check-rule exact."
        )
    return uncertainty.estimators(arrays, entry["spec"])


def write(path: Path, baseline: dict) -> None:
    atomic.write_json(path, baseline)


def compare(
    records: list[ResultRecord],
    baseline: dict,
    rule: str = "exact",
    out_dir: Path | None = None,
    baseline_path: Path | None = None,
    resamples: int = 10_000,
) -> tuple[list[Regression], list[str]]:
    """Regressions of the heads this run computed (a head left out of the run is not judged), and the
    heads of the run that the baseline does not hold. ``rule``: "exact" or "interval" (see above)."""
    current = {r.head.name: r for r in records}
    for r in records:
        comparable(baseline, r.suite.name, r.suite.version, r.config.protocol_hash, {r.head.name: r.head.options})
    found = []
    for head, base_metrics in baseline["scores"].items():
        rec = current.get(head)
        if rec is None:
            continue
        intervals = {}
        if rule == "interval" and rec.status == "ok" and out_dir is not None:
            base_ests = _baseline_estimators(baseline, baseline_path, head)
            arrays = results.read_outcomes(out_dir, rec) if base_ests else None
            if arrays is not None:
                intervals = uncertainty.paired(uncertainty.estimators(arrays, rec.outcomes.spec), base_ests, resamples)
        for metric, base_value in base_metrics.items():
            if base_value is None:
                continue
            tol = baseline["tolerances"].get(metric, baseline["default_tolerance"])
            direction = baseline["metric_directions"].get(metric, "higher")
            value = None if rec.status != "ok" else rec.metrics.get(metric)
            if value is None:
                found.append(Regression(head, metric, base_value, None, tol, direction))
                continue
            if metric in intervals:  # worse beyond the tolerance across the whole interval, not by chance
                d = intervals[metric]
                worse = d["high"] < -tol if direction == "higher" else d["low"] > tol
                if worse:
                    found.append(Regression(head, metric, base_value, value, tol, direction, (d["low"], d["high"])))
                continue
            drop = (base_value - value) if direction == "higher" else (value - base_value)
            if drop > tol:
                found.append(Regression(head, metric, base_value, value, tol, direction))
    return found, sorted(set(current) - set(baseline["scores"]))


def comparable(baseline: dict, suite: str, suite_version: int, protocol_hash: str, head_options: dict) -> None:
    """Raise ``BaselineError`` unless a run of this suite, version, protocol and these head options can be
    judged against ``baseline`` (a baseline without head options, from before they were recorded, skips
    that part)."""
    if baseline["suite"] != suite:
        raise BaselineError(f"baseline is for suite {baseline['suite']!r}, the run is {suite!r}.")
    if baseline["protocol_hash"] != protocol_hash or baseline["suite_version"] != suite_version:
        raise BaselineError(
            f"the run's protocol ({protocol_hash}, suite v{suite_version}) differs from the baseline's "
            f"({baseline['protocol_hash']}, suite v{baseline['suite_version']}): scores are not comparable. Run "
            "with the baseline's config, or rewrite it on purpose with --update-baseline."
        )
    for head, options in head_options.items():
        made_with = baseline.get("head_options", {}).get(head)
        if made_with is not None and options != made_with:
            differ = sorted(k for k in set(made_with) | set(options) if made_with.get(k) != options.get(k))
            shown = ", ".join(f"{k} {options.get(k)!r} (baseline {made_with.get(k)!r})" for k in differ)
            raise BaselineError(
                f"head {head!r} runs with other options than the baseline's: {shown}. Its scores are not "
                "comparable; run it with the baseline's options, or rewrite the baseline with --update-baseline."
            )


def precheck(
    baseline: dict,
    path: Path,
    rule: str,
    suite: str,
    suite_version: int,
    protocol_hash: str,
    head_options: dict[str, dict],
) -> None:
    """Everything about the baseline that can refuse the check, checked before the run is computed: its
    suite, protocol, the heads' options and, for the interval rule, its outcome files' checksums."""
    comparable(baseline, suite, suite_version, protocol_hash, head_options)
    if rule == "interval":
        for head in head_options:
            if head in baseline["scores"]:
                _baseline_estimators(baseline, path, head)  # raises on a missing or altered outcome file


def report(regressions: list[Regression]) -> str:
    rows = [
        {
            "head": r.head,
            "metric": r.metric,
            "better": r.direction,
            "baseline": r.baseline,
            "current": "missing/failed" if r.current is None else r.current,
            "change": "" if r.change is None else r.change,
            "95% interval of change": "" if r.interval is None else f"[{r.interval[0]:+.4f}, {r.interval[1]:+.4f}]",
            "tolerance": r.tolerance,
        }
        for r in regressions
    ]
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f")

"""Intervals and ties for a leaderboard, and paired comparisons for ``run_bench.py compare``, all
from the per-query outcome files beside the results (no rerun). The statistics themselves are in
bench/eval/uncertainty.py; this module decides what is compared with what."""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.core import atomic, hashing
from bench.core.errors import UserError
from bench.core.records import ResultRecord
from bench.eval import uncertainty
from bench.report import results

LEVEL = 0.95
log = logging.getLogger("simbench")

_warn = logging.getLogger("simbench").warning  # the CLI configures where it goes (bench/cli/common.py)


@dataclass
class SuiteVerdicts:
    """For one suite's rows: each head's interval per metric, and per metric the heads tied for best."""

    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    best: dict[str, set[str]] = field(default_factory=dict)
    versus_reference: dict[str, dict] = field(default_factory=dict)  # head -> paired result on the main metric
    reference: str | None = None
    resamples: int = uncertainty.DEFAULT_RESAMPLES


def load_estimators(out_dir: Path, record: ResultRecord, warn=_warn) -> dict | None:
    try:
        arrays = results.read_outcomes(out_dir, record)
    except results.ResultFileError as exc:
        warn(f"warning: {exc}")
        return None
    if arrays is None:
        return None
    return uncertainty.estimators(arrays, record.outcomes.spec)


def row_estimators(out_dir: Path, rs: list[ResultRecord], warn=_warn) -> dict[str, list[dict]]:
    """Head -> one estimator dict per repeat, for the rows (repeats collapsed) whose outcomes all load."""
    ests = {}
    for r in rs:
        if r.status == "ok":
            per_repeat = [load_estimators(out_dir, x, warn) for x in (r.repeats.records if r.repeats else [r])]
            if per_repeat and all(per_repeat):
                ests[r.head.name] = per_repeat
    return ests


def repeat_indices(r: ResultRecord) -> list[int]:
    return [x.repeat for x in (r.repeats.records if r.repeats else [r])]


def matched(a: ResultRecord, ea: list, b: ResultRecord, eb: list) -> tuple[list, list]:
    """The estimators of the repeats both rows ran, matched by repeat index (never by position or count):
    repeat r of one head is paired with repeat r of the other."""
    ia, ib = repeat_indices(a), repeat_indices(b)
    common = sorted(set(ia) & set(ib))
    return [ea[ia.index(r)] for r in common], [eb[ib.index(r)] for r in common]


class Memo:
    """Intervals and paired results stored beside the runs (``OUT/.verdicts/``), keyed by everything they
    are computed from: the outcome files' checksums and specs, the resamples, the level and the code of
    this module and bench/eval/uncertainty.py. A rebuilt board then costs seconds, not minutes of
    bootstrap; anything changed is a new key, so a stored value is never served for other inputs."""

    def __init__(self, out_dir: Path | None):
        self.folder = None if out_dir is None else Path(out_dir) / ".verdicts"

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def code() -> str:
        return hashing.json_sha256(
            [hashing.file_sha256(Path(m.__file__)) for m in (uncertainty, sys.modules[__name__])]
        )

    def get(self, kind: str, inputs: list, compute):
        if self.folder is None:
            return compute()
        key = hashing.json_sha256({"kind": kind, "inputs": inputs, "code": self.code(), "level": LEVEL}, 32)
        path = self.folder / f"{key}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())["value"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is computed again and rewritten
        value = compute()
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):  # NaN or a type JSON cannot hold: not stored, computed again next time
            return value
        atomic.write_json(path, {"kind": kind, "value": value})
        return json.loads(text)  # what a later hit returns, so both paths give the same types


def _identity(r: ResultRecord) -> list:
    """What a row's estimators are made of: each repeat's outcome file (by checksum) and spec."""
    return [[x.outcomes.sha256, x.outcomes.spec] for x in (r.repeats.records if r.repeats else [r]) if x.outcomes]


def intervals(
    ests: dict[str, list[dict]], resamples: int, memo: Memo | None = None, identity: dict | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """Each head's 95% bootstrap interval per metric, over test units and, with repeats, over repeats."""
    memo = memo or Memo(None)

    def one(e):
        return uncertainty.bootstrap(e[0], resamples, level=LEVEL, repeat_groups=e if len(e) > 1 else None)

    found = {}
    for head, e in ests.items():
        value = memo.get("bootstrap", [identity[head], resamples], lambda e=e: one(e)) if identity else one(e)
        found[head] = {m: tuple(ci) for m, ci in value.items()}
    return found


def for_suite(
    out_dir: Path,
    rs: list[ResultRecord],
    reference: str | None = "cosine",
    resamples: int = uncertainty.DEFAULT_RESAMPLES,
    warn=_warn,
) -> SuiteVerdicts:
    """Bootstrap every row with outcomes; mark as best, per metric, the top head and every head whose
    paired interval of the difference to it contains 0 (not significantly worse)."""
    v = SuiteVerdicts(resamples=resamples)
    ests = row_estimators(out_dir, rs, warn)
    memo, identity = Memo(out_dir), {r.head.name: _identity(r) for r in rs}
    log.info(f"intervals and ties for {len(ests)} head(s), {resamples:,} resamples (stored under {out_dir}/.verdicts)")
    v.intervals = intervals(ests, resamples, memo, identity)
    contestants = [r for r in rs if r.contestant]  # a degenerate head is never best (bench/eval/degenerate.py)
    directions = rs[0].directions
    pairs: dict[tuple[str, str], dict] = {}

    rows_by_name = {r.head.name: r for r in rs}

    def pair(a: str, b: str) -> dict:
        if (a, b) not in pairs:
            ea, eb = matched(rows_by_name[a], ests[a], rows_by_name[b], ests[b])
            pairs[(a, b)] = (
                memo.get(
                    "paired",
                    [identity[a], identity[b], resamples],
                    lambda: uncertainty.paired(ea, eb, resamples, level=LEVEL),
                )
                if ea
                else {}  # no repeat in common: not compared
            )
        return pairs[(a, b)]

    for metric, up in directions.items():
        valued = [(r.head.name, r.metrics.get(metric)) for r in contestants if r.metrics.get(metric) is not None]
        if not valued:
            continue
        top = (max if up else min)(valued, key=lambda hv: hv[1])[0]
        tied = {top}
        for head, _ in valued:
            if head == top:
                continue
            if head in ests and top in ests and metric in ests[head][0] and metric in ests[top][0]:
                d = pair(head, top).get(metric)
                if d is not None and d["low"] <= 0 <= d["high"]:
                    tied.add(head)
        v.best[metric] = tied
    main = rs[0].suite.main_metric
    if reference in ests:
        v.reference = reference
        for head in ests:
            if head != reference and main in ests[head][0] and main in ests[reference][0]:
                found = pair(head, reference).get(main)
                if found is not None:
                    v.versus_reference[head] = found
    return v


def compare(
    out_dir: Path, rs: list[ResultRecord], heads: list[str], resamples: int = uncertainty.DEFAULT_RESAMPLES, warn=_warn
) -> list[dict]:
    """The first head against each other one: per metric, the difference, its paired 95% interval, the
    sign-flip p-value, and the p-value after Holm's correction across every metric and pair compared.
    ``rs`` are leaderboard rows (repeats collapsed): with repeats, repeat r of one head is paired with
    repeat r of the other."""
    by_name = {r.head.name: r for r in rs}
    missing = [h for h in heads if h not in by_name]
    if missing:
        raise UserError(f"no result for {', '.join(missing)} in this suite's comparable rows")
    ests = {}
    for h in heads:
        e = [
            load_estimators(out_dir, x, warn)
            for x in (by_name[h].repeats.records if by_name[h].repeats else [by_name[h]])
        ]
        if not all(e):
            raise UserError(
                f"{h}'s result has no per-query outcomes (written by an older version, or it failed); "
                "rerun it with --force to compare it."
            )
        ests[h] = e
    order = [m for m, _ in rs[0].suite.metric_directions]
    rows = []
    for other in heads[1:]:
        ea, eb = matched(by_name[heads[0]], ests[heads[0]], by_name[other], ests[other])
        if not ea:
            raise UserError(
                f"{heads[0]} (repeats {repeat_indices(by_name[heads[0]])}) and {other} (repeats "
                f"{repeat_indices(by_name[other])}) have no repeat in common; run both with the same --repeats"
            )
        found = uncertainty.paired(ea, eb, resamples, level=LEVEL)
        for metric in sorted(found, key=lambda m: order.index(m) if m in order else len(order)):
            rows.append({"a": heads[0], "b": other, "metric": metric, **found[metric]})
    adjusted = uncertainty.holm({i: row["p_value"] for i, row in enumerate(rows)})
    for i, row in enumerate(rows):
        row["p_holm"] = adjusted[i]
    return rows

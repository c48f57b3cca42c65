"""Leaderboards (Markdown, CSV, PNG) built from result files alone.

A table never mixes suite versions, schema versions or protocols (suite parameters, training
budget, seed): per suite it shows the newest suite version and, within it, the protocol of the
newest run; anything else is named in a note under the table rather than silently blended in.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from pathlib import Path

import pandas as pd

from bench.core import atomic, hashing, records
from bench.core.records import ResultRecord
from bench.eval import uncertainty
from bench.report import curves, last_run, results
from bench.report import verdicts as verdicts_mod

_warn = logging.getLogger("simbench").warning  # the CLI configures where it goes (bench/cli/common.py)


def _directions(record) -> list[tuple[str, bool]]:
    return list(record.directions.items())


def _setting(r: ResultRecord) -> str:
    """What a head's repeats must share to be averaged: its version, its options and its code, libraries
    and device (the protocol, data included, is shared already). What a repeat varies on purpose is
    taken out: repeat r runs a head's ``seed`` option + r (bench/run/runner.py), so kme_rff's and wpse's
    repeats have seeds 0, 1, 2 and are one setting."""
    options = dict(r.head.options)
    if isinstance(options.get("seed"), int) and not isinstance(options["seed"], bool):
        options["seed"] -= r.repeat
    identity = {k: v for k, v in r.identity.items() if k != "data"}  # each repeat's world is its own data
    return hashing.json_sha256([r.head.version, options, identity], 16)


def select(
    records: list[ResultRecord], last_runs: dict[str, last_run.LastRun] | None = None
) -> tuple[dict[str, list[ResultRecord]], list[str]]:
    """Per suite, the comparable records; plus notes on what was left out and why.

    The protocol is the latest run's (``last_run``; the newest record's where no run left an index).
    Within it, each head shows the setting (options, code, data) of its newest record: repeats at
    another setting are left out and named, never averaged in. Repeats are matched by their index."""
    by_suite: dict[str, list[ResultRecord]] = {}
    for r in records:
        by_suite.setdefault(r.suite.name, []).append(r)
    chosen, notes = {}, []
    for suite, rs in sorted(by_suite.items()):
        run = (last_runs or {}).get(suite)
        anchored = [
            r for r in rs if run and (r.suite.version, r.config.protocol_hash) == (run.suite_version, run.protocol_hash)
        ]
        newest = max(anchored or rs, key=lambda r: (r.suite.version, r.created_utc))
        same = [
            r
            for r in rs
            if r.suite.version == newest.suite.version and r.config.protocol_hash == newest.config.protocol_hash
        ]
        left = [r for r in rs if r not in same]
        if left:
            notes.append(
                f"{suite}: left out {', '.join(sorted({r.head.name for r in left}))} "
                f"(older suite version or a different protocol than the latest run; rerun them to include)"
            )
        keep = []
        for head in sorted({r.head.name for r in same}):
            group = [r for r in same if r.head.name == head]
            setting = _setting(max(group, key=lambda r: r.created_utc))
            mine = [r for r in group if _setting(r) == setting]
            stale = sorted(r.repeat for r in group if r not in mine)
            if stale:
                notes.append(
                    f"{suite}: left out repeat(s) {', '.join(map(str, stale))} of {head}: another setting or code "
                    "than its latest run (rerun with the same --repeats to include them)"
                )
            keep += mine
        chosen[suite] = keep
    return chosen, notes


def collapse_repeats(rs: list[ResultRecord]) -> list[ResultRecord]:
    """One row per head: with several repeats, the mean of each metric over the repeats that ran, with
    their standard deviation and count under ``repeats`` (and the records, for intervals)."""
    by_head: dict[str, list[ResultRecord]] = {}
    for r in sorted(rs, key=lambda r: r.repeat):
        by_head.setdefault(r.head.name, []).append(r)
    out = []
    for group in by_head.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        ok = [g for g in group if g.status == "ok"]
        failed = [g for g in group if g.status != "ok"]
        row = (
            group[0]
            if not failed
            else dataclasses.replace(group[0], status="failed", error=f"repeat {failed[0].repeat}: {failed[0].error}")
        )
        means, sds = {}, {}
        for m in {m for g in ok for m in g.metrics}:
            values = [g.metrics[m] for g in ok if g.metrics.get(m) is not None]
            if values:
                means[m] = statistics.fmean(values)
                sds[m] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(dataclasses.replace(row, metrics=means, repeats=records.RepeatGroup(len(ok), sds, group)))
    return out


def _order(rs: list[ResultRecord]) -> list[ResultRecord]:
    main = rs[0].suite.main_metric
    up = dict(_directions(rs[0])).get(main, True)

    def key(r):
        kind = 0 if r.head.kind == "reference" else 1
        value = r.metrics.get(main)
        ranked = (-value if up else value) if value is not None else 0
        return (kind, r.status != "ok", bool(degenerate_text(r)), ranked, r.head.name)

    return sorted(rs, key=key)


def _commit(r: ResultRecord) -> str:
    return (r.git_commit or "unknown")[:10] + (" (dirty)" if r.git_dirty else "")


def provenance_line(rs: list[ResultRecord]) -> str:
    """Which commits and dates the rows come from, stated for the rows, not for the newest one."""
    commits = sorted({_commit(r) for r in rs})
    dates = sorted(r.created_utc[:10] for r in rs)
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    if len(commits) == 1:
        return f"Every row from commit `{commits[0]}`, computed {span}."
    return (
        f"Rows come from {len(commits)} commits ({', '.join(f'`{c}`' for c in commits)}), computed {span}: "
        "see the commit and date columns."
    )


def protocol_line(r: ResultRecord) -> str:
    """The protocol's resolved settings beside its hash, so nobody has to decode a hash."""
    resolved = r.config.resolved
    train = ", ".join(f"{k} {v}" for k, v in resolved.get("train", {}).items())
    suite = ", ".join(f"{k} {v}" for k, v in resolved.get("suite_params", {}).items())
    return f"Protocol `{r.config.protocol_hash}`: seed {resolved.get('seed')}; train: {train}; suite: {suite}."


def _layout(r: ResultRecord) -> dict:
    """The suite's table layout as recorded in the result; one table of every metric if none was."""
    report = r.suite.report or {}
    tables = report.get("tables") or [{"title": "", "columns": [[m, m] for m, _ in _directions(r)], "legend": ""}]
    return {"summary": report.get("summary") or [r.suite.main_metric], "tables": tables}


def _cell_text(value, status: str, bold: bool, interval=None) -> str:
    if status != "ok":
        return "skipped" if status == "skipped" else "failed"
    if value is None or pd.isna(value):
        return ""
    text = f"{value:.4f}" if interval is None else f"{value:.4f} ± {uncertainty.half_width(interval):.4f}"
    return f"**{text}**" if bold else text


def not_converged(r: ResultRecord) -> list[ResultRecord]:
    """The records (repeats) of a row whose validation metric still improved at the end of training."""
    group = r.repeats.records if r.repeats else [r]
    return [g for g in group if g.not_converged]


def convergence_text(r: ResultRecord) -> str:
    """'yes', 'NOT CONVERGED' (with how many repeats), or '' where the cell has no learning curve."""
    group = r.repeats.records if r.repeats else [r]
    if not any(g.convergence for g in group):
        return ""
    bad = not_converged(r)
    if not bad:
        return "yes"
    return "NOT CONVERGED" + (f" ({len(bad)} of {len(group)} repeats)" if len(group) > 1 else "")


def degenerate_text(r: ResultRecord) -> str:
    """'DEGENERATE' (with how many repeats) where a row's scores carry no ranking (bench/eval/degenerate.py)."""
    group = r.repeats.records if r.repeats else [r]
    bad = [g for g in group if g.degenerate]
    if not bad:
        return ""
    return "DEGENERATE" + (f" ({len(bad)} of {len(group)} repeats)" if len(group) > 1 else "")


def markdown_table(
    rs: list[ResultRecord],
    columns: list[tuple[str, str]],
    provenance: bool = True,
    verdicts: verdicts_mod.SuiteVerdicts | None = None,
) -> str:
    """Heads as rows, ``(label, metric)`` columns with ↑/↓. With verdicts, each value carries ± the
    half-width of its 95% interval, and bold marks every head tied for best; without, the best value.
    Columns no row has a value for are dropped; returns "" when none is left."""
    ordered = _order(rs)
    directions = dict(_directions(rs[0]))
    columns = [(label, m) for label, m in columns if any(r.metrics.get(m) is not None for r in ordered)]
    if not columns:
        return ""
    contestant = [r.contestant for r in ordered]  # never a reference, a failure or a degenerate head
    shown = pd.DataFrame({"head": [r.head.name for r in ordered], "v": [str(r.head.version) for r in ordered]})
    if any(r.repeats for r in ordered):
        shown["n"] = [str(r.repeats.n if r.repeats else 1) for r in ordered]
    for label, m in columns:
        up = directions.get(m, True)
        values = [r.metrics.get(m) for r in ordered]
        candidates = [v for v, c in zip(values, contestant) if c and v is not None and not pd.isna(v)]
        best = (max(candidates) if up else min(candidates)) if candidates else None
        tied = verdicts.best.get(m) if verdicts else None
        intervals = verdicts.intervals if verdicts else {}
        shown[f"{label} {'↑' if up else '↓'}"] = [
            _cell_text(
                v,
                r.status,
                c and (r.head.name in tied if tied is not None else best is not None and v == best),
                intervals.get(r.head.name, {}).get(m),
            )
            for v, c, r in zip(values, contestant, ordered)
        ]
    if any(convergence_text(r) for r in ordered):
        shown["converged"] = [convergence_text(r) for r in ordered]
    if any(degenerate_text(r) for r in ordered):
        shown["degenerate"] = [degenerate_text(r) for r in ordered]
    if provenance and len({_commit(r) for r in rs}) > 1:
        shown["commit"] = [_commit(r) for r in ordered]
        shown["date"] = [r.created_utc[:10] for r in ordered]
    return shown.to_markdown(index=False, disable_numparse=True)


def _versus(v: verdicts_mod.SuiteVerdicts | None, head: str) -> str:
    d = v.versus_reference.get(head) if v else None
    if d is None:
        return "reference" if v and head == v.reference else ""
    return f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] p={d['p_value']:.3g}"


def _summary(chosen: dict[str, list[ResultRecord]], verdicts: dict) -> list[str]:
    parts = ["## Summary: each suite's main metric", ""]
    for suite, rs in chosen.items():
        summary = _layout(rs[0])["summary"]
        v = verdicts.get(suite)
        table = markdown_table(
            rs, [(m.split("/")[0] if "/" in m else m, m) for m in summary], provenance=False, verdicts=v
        )
        ordered = _order(rs)
        if any(r.repeats for r in ordered):
            main = rs[0].suite.main_metric
            table = _append_column(
                table,
                "sd over repeats",
                [f"{r.repeats.sd[main]:.4f}" if r.repeats and main in r.repeats.sd else "" for r in ordered],
            )
        if v and v.reference:
            table = _append_column(
                table, f"Δ main vs {v.reference} [95% CI], p", [_versus(v, r.head.name) for r in ordered]
            )
        metric = summary[0].split("/")[-1]
        per = " per dataset" if "/" in summary[0] else ""
        parts += [f"**{suite}**: `{metric}`{per}.", "", table, ""]
    return parts


def _append_column(table: str, title: str, cells: list[str]) -> str:
    lines = table.splitlines()
    width = max(len(title), *(len(c) for c in cells))
    lines[0] += f" {title:<{width}} |"
    lines[1] += f":{'-' * (width + 1)}|"
    lines[2:] = [line + f" {cell:<{width}} |" for line, cell in zip(lines[2:], cells)]
    return "\n".join(lines)


def _legend(verdicts: dict) -> str:
    if not any(v.intervals for v in verdicts.values()):
        return "Bold: best head per column."
    n = next(v.resamples for v in verdicts.values() if v.intervals)
    return (
        f"± is the half-width of a 95% percentile bootstrap interval over test queries ({n:,} resamples; an "
        "image is drawn with all of its captions). **Bold** marks the best head of a column and every head tied "
        "with it: one whose paired 95% interval of the difference to the best contains 0 (not significantly "
        "worse). Δ vs the reference head: the paired difference of the main metric, its interval and the "
        "sign-flip randomization p-value. A value without ± has no per-query form (a correlation over all "
        "pairs) or no outcome file; there bold marks the best value only. converged: NOT CONVERGED marks a "
        "cell whose validation metric (data disjoint from training and test) still improved by more than the "
        "suite's tolerance over the last 20% of its training steps; its verdicts may reflect the budget. "
        "DEGENERATE marks a head whose best positive ties with at least half of the negatives for most queries "
        "(constant or collapsed scores): its recall is chance, and it is never marked best."
    )


def build_markdown(
    chosen: dict[str, list[ResultRecord]], notes: list[str], source: str = "results", verdicts: dict | None = None
) -> str:
    verdicts = verdicts or {}
    parts = [
        "# simbench leaderboard",
        "",
        f"Built from `{source}/runs/` by `run_bench.py`; do not edit by hand. Reference rows such as `oracle` "
        "are ceilings, not contestants. ↑ higher is better, ↓ lower; v: the head's version.",
        "",
        _legend(verdicts),
        "",
    ]
    parts += _summary(chosen, verdicts)
    for suite, rs in chosen.items():
        first = rs[0]
        parts += [
            f"## {suite} (suite v{first.suite.version}, schema v{first.schema_version})",
            "",
            f"Main metric: `{first.suite.main_metric}`. {provenance_line(rs)}",
            "",
            protocol_line(first),
            "",
        ]
        for t in _layout(first)["tables"]:
            table = markdown_table(rs, [tuple(c) for c in t["columns"]], verdicts=verdicts.get(suite))
            if table:
                parts += ([f"### {t['title']}", ""] if t["title"] else []) + [table, ""]
                parts += [t["legend"], ""] if t.get("legend") else []
        failed = [r for r in rs if r.status != "ok"]
        for r in failed:
            parts.append(f"- `{r.head.name}` {'skipped' if r.status == 'skipped' else 'failed'}: {r.error}")
        if failed:
            parts.append("")
    if notes:
        parts += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)


def build_csv(chosen: dict[str, list[ResultRecord]], verdicts: dict | None = None) -> str:
    rows = []
    for suite, rs in chosen.items():
        for r in _order(rs):
            declared = [m for m, _ in _directions(r)]  # the suite's natural order: @1, @5, @10
            extra = sorted(set(r.metrics) - set(declared))
            rows.append(
                {
                    "suite": suite,
                    "suite_version": r.suite.version,
                    "schema_version": r.schema_version,
                    "head": r.head.name,
                    "head_version": r.head.version,
                    "kind": r.head.kind,
                    "repeat": r.repeat,
                    "status": r.status,
                    **{f"metric:{m}": r.metrics.get(m) for m in declared + extra if m in r.metrics},
                    **_interval_columns(verdicts or {}, suite, r, declared),
                    "config_hash": r.config.hash,
                    "protocol_hash": r.config.protocol_hash,
                    "seed": r.seed,
                    "git_commit": r.git_commit,
                    "created_utc": r.created_utc,
                }
            )
    return pd.DataFrame(rows).to_csv(index=False)


def _interval_columns(verdicts: dict, suite: str, r: dict, metrics: list[str]) -> dict:
    v = verdicts.get(suite)
    found = v.intervals.get(r.head.name, {}) if v else {}
    out = {}
    for m in metrics:
        if m in found:
            out[f"ci95_low:{m}"], out[f"ci95_high:{m}"] = found[m]
    return out


def plot_path(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / f"leaderboard-{suite}.png"


def build_plot(rs: list[ResultRecord], path: Path, verdicts: verdicts_mod.SuiteVerdicts | None = None) -> None:
    """One figure per suite. Left: the main metric of the contestants on their own axis, with 95% intervals
    as error bars and the heads tied for best in a colour of their own; reference rows (oracle,
    clip_frozen) are named in the panel's note, not drawn, so a far-off reference cannot squeeze the
    contestants into a few pixels. Right: the headline metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in _order(rs) if r.status == "ok"]
    if not rs:
        return
    suite = rs[0].suite
    directions = dict(_directions(rs[0]))
    main = suite.main_metric
    up = directions.get(main, True)
    # references: the suite's rows (oracle) and heads that train nothing (clip_frozen: the backbone as it is)
    refs = [r for r in rs if r.head.is_reference or not r.head.trainable]
    rows = [r for r in rs if r not in refs] or refs
    headline = [m for m in suite.headline_metrics if m != main]
    names = [r.head.name for r in rows]
    intervals = verdicts.intervals if verdicts else {}
    tied = (verdicts.best.get(main) if verdicts else None) or set()
    panels = 2 if headline else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 1.6 + 0.45 * len(rows)), squeeze=False)
    ax = axes[0, 0]
    values = [r.metrics.get(main) if r.metrics.get(main) is not None else float("nan") for r in rows]
    errors = [[0.0] * len(rows), [0.0] * len(rows)]
    for i, r in enumerate(rows):
        ci = intervals.get(r.head.name, {}).get(main)
        if ci is not None and values[i] == values[i]:
            errors[0][i], errors[1][i] = max(values[i] - ci[0], 0.0), max(ci[1] - values[i], 0.0)
    colours = ["tab:orange" if r.head.name in tied else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), values, xerr=errors, color=colours, error_kw={"elinewidth": 1, "capsize": 3})
    for i, v in enumerate(values):
        if v == v:
            ax.annotate(
                f"{v:.4f}", (v + errors[1][i], i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7
            )
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()

    ax.set_ylabel("head")
    ax.set_title(f"{suite.name}: main metric")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)
    notes = []
    if tied:
        notes.append("orange: the best head and every head tied with it")
    if refs and rows is not refs:
        notes.append(
            "references (not drawn): "
            + ", ".join(f"{r.head.name} {r.metrics.get(main):.4f}" for r in refs if r.metrics.get(main) is not None)
        )
    ax.set_xlabel("\n".join([f"{main} ({'higher' if up else 'lower'} is better; bars: 95% interval)", *notes]))
    if headline:
        ax = axes[0, 1]
        height = 0.8 / len(headline)
        for i, m in enumerate(headline):
            vals = [r.metrics.get(m) if r.metrics.get(m) is not None else float("nan") for r in rs]
            ax.barh(
                [y + i * height for y in range(len(rs))],
                vals,
                height=height,
                label=f"{m} ({'↑' if directions.get(m, True) else '↓'})",
            )
        ax.set_yticks([y + height * (len(headline) - 1) / 2 for y in range(len(rs))], [r.head.name for r in rs])
        ax.invert_yaxis()
        ax.set_xlabel("metric value")
        ax.set_title("headline metrics (references included)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def build(
    out_dir: Path, warn=_warn, reference: str | None = "cosine", resamples: int = uncertainty.DEFAULT_RESAMPLES
) -> str:
    """Write leaderboard.md/.csv/.png under ``out_dir``; return the Markdown. Intervals and ties come
    from the per-query outcomes beside each result (``resamples`` 0: none)."""
    out_dir = Path(out_dir)
    chosen, notes = select(results.load_all(out_dir, warn=warn), last_run.read_all(out_dir, warn))
    chosen = {s: rs for s, rs in chosen.items() if rs}
    plots = {plot_path(out_dir, suite) for suite in chosen} | {curves.curves_path(out_dir, s) for s in chosen}
    for stale in [
        out_dir / "leaderboard.png",
        *out_dir.glob("leaderboard-*.png"),
        *out_dir.glob("curves-*.png"),
    ]:  # never a plot of runs now gone
        if stale not in plots:
            stale.unlink(missing_ok=True)
    if not chosen:
        for name in ("leaderboard.md", "leaderboard.csv"):
            (out_dir / name).unlink(missing_ok=True)
        return "No result files yet: run `python run_bench.py` first."
    rows = {suite: collapse_repeats(rs) for suite, rs in chosen.items()}
    verdicts = (
        {suite: verdicts_mod.for_suite(out_dir, rs, reference, resamples, warn) for suite, rs in rows.items()}
        if resamples > 0
        else {}
    )
    md = build_markdown(rows, notes, source=out_dir.as_posix(), verdicts=verdicts)
    atomic.write_text(out_dir / "leaderboard.md", md)
    atomic.write_text(out_dir / "leaderboard.csv", build_csv(chosen, verdicts))
    for suite, rs in rows.items():
        build_plot(rs, plot_path(out_dir, suite), verdicts.get(suite))
        curves.build_curves(chosen[suite], curves.curves_path(out_dir, suite))
    return md

"""A sweep's table and figures: each metric against the swept value, one line per head.

Built from the records of the runs the sweep just made (or reused), never from whatever else a
folder holds. Intervals: the 95% bootstrap over test units and repeats that the leaderboard uses
(bench/report/verdicts.py), where the metric has per-query outcomes; otherwise, with repeats, a
Student-t interval over the repeats' values; with one repeat and no outcomes, none.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.core import atomic
from bench.core.records import ResultRecord
from bench.report import leaderboard, verdicts

_warn = logging.getLogger("simbench").warning  # the CLI configures where it goes (bench/cli/common.py)


@dataclass
class Point:
    values: dict  # config key -> value at this point
    folder: Path  # where its runs are
    records: list[ResultRecord]  # every record of the point (all repeats), references included


def _t_interval(values: list[float]) -> tuple[float, float] | None:
    from scipy import stats

    if len(values) < 2:
        return None
    m, s = statistics.fmean(values), statistics.stdev(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * s / math.sqrt(len(values))
    return m - half, m + half


def table(points: list[Point], keys: list[str], resamples: int, warn=_warn) -> pd.DataFrame:
    """Long form: one row per point, head and metric, with mean, sd, n, interval and its kind."""
    rows = []
    for point in points:
        # the same order however the runs were made (reused cells and recomputed references come back in turn)
        collapsed = sorted(
            leaderboard.collapse_repeats(point.records), key=lambda r: (r.head.kind == "reference", r.head.name)
        )
        ests = verdicts.row_estimators(point.folder, collapsed, warn) if resamples > 0 else {}
        boot = verdicts.intervals(ests, resamples) if ests else {}
        for r in collapsed:
            head = r.head.name
            per_repeat = r.repeats.records if r.repeats else [r]
            for metric, direction in r.suite.metric_directions:
                value = r.metrics.get(metric) if r.status == "ok" else None
                values = [
                    x.metrics[metric] for x in per_repeat if x.status == "ok" and x.metrics.get(metric) is not None
                ]
                interval, kind = boot.get(head, {}).get(metric), "bootstrap"
                if interval is None:
                    interval, kind = _t_interval(values), "t over repeats"
                rows.append(
                    {
                        **{k: point.values[k] for k in keys},
                        "head": head,
                        "kind": r.head.kind,
                        "metric": metric,
                        "higher_is_better": direction == "higher",
                        "mean": value,
                        "sd": statistics.stdev(values) if len(values) > 1 else None,
                        "n": len(values),
                        "low": interval[0] if interval else None,
                        "high": interval[1] if interval else None,
                        "interval": kind if interval else "",
                        "status": r.status,
                        "code_hash": r.identity["code"]["hash"],
                        "protocol_hash": r.config.protocol_hash,
                        "folder": point.folder.name,
                    }
                )
    return pd.DataFrame(rows)


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _heads_in_order(part: pd.DataFrame) -> list[str]:
    """Contestants in the order they ran, then references (ceilings)."""
    first = list(dict.fromkeys(part["head"]))
    ref = set(part[part.kind == "reference"]["head"])
    return [h for h in first if h not in ref] + [h for h in first if h in ref]


def markdown(df: pd.DataFrame, keys: list[str], metrics: list[str], title: str, provenance: str = "") -> str:
    """Per metric a table: a row per point, a column per head, ``mean [low, high]`` (n repeats)."""
    lines = [f"# {title}", "", *([provenance, ""] if provenance else [])]
    labels = [k.split(".")[-1] for k in keys]
    for metric in metrics:
        part = df[df.metric == metric]
        if part.empty:
            continue
        up = bool(part.higher_is_better.iloc[0])
        heads = _heads_in_order(part)
        lines += [
            f"## {metric} ({'higher' if up else 'lower'} is better)",
            "",
            "| " + " | ".join(labels + heads) + " |",
            "|" + "---|" * (len(labels) + len(heads)),
        ]
        for values, g in part.groupby(keys, sort=False):
            values = values if isinstance(values, tuple) else (values,)
            cells = []
            for h in heads:
                x = g[g["head"] == h]
                if x.empty:
                    cells.append("")
                    continue
                x = x.iloc[0]
                if x.status != "ok":
                    cells.append("failed")
                    continue
                interval = f" [{_fmt(x.low)}, {_fmt(x.high)}]" if x.interval else ""
                cells.append(f"{_fmt(x['mean'])}{interval}")
            lines.append("| " + " | ".join([str(v) for v in values] + cells) + " |")
        n = int(part.n.max()) if len(part) else 0
        kinds = sorted({k for k in part.interval if k})
        lines += [
            "",
            f"n = {n} repeat(s) per cell; intervals: 95%, {' / '.join(kinds) or 'none (one repeat, no outcomes)'}.",
            "",
        ]
    return "\n".join(lines)


def plot(df: pd.DataFrame, keys: list[str], metric: str, path: Path, title: str) -> bool:
    """The metric against the first key's values, one line per head (references dashed), a panel
    per combination of the other keys; bands are the intervals of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = df[(df.metric == metric) & df["mean"].notna()]
    if part.empty:
        return False
    x_key, panel_keys = keys[0], keys[1:]
    panels = list(part.groupby(panel_keys, sort=False)) if panel_keys else [((), part)]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=False)
    xs = list(dict.fromkeys(part[x_key]))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    log_x = numeric and min(xs) > 0 and max(xs) / min(xs) >= 8
    heads = _heads_in_order(part)
    colours = {
        h: f"C{i}" for i, h in enumerate(h for h in heads if part[part["head"] == h].kind.iloc[0] != "reference")
    }
    up = bool(part.higher_is_better.iloc[0])
    for i, (values, g) in enumerate(panels):
        ax = axes[i // cols, i % cols]
        for h in heads:
            x = g[g["head"] == h]
            if x.empty:
                continue
            pos = x[x_key].tolist() if numeric else [xs.index(v) for v in x[x_key]]
            ref = x.kind.iloc[0] == "reference"
            ax.plot(
                pos,
                x["mean"],
                marker="o",
                ms=3,
                label=h,
                color="black" if ref else colours[h],
                linestyle="--" if ref else "-",
                linewidth=1,
            )
            band = x[x.low.notna()]
            if not band.empty and not ref:
                bpos = band[x_key].tolist() if numeric else [xs.index(v) for v in band[x_key]]
                ax.fill_between(bpos, band.low.astype(float), band.high.astype(float), color=colours[h], alpha=0.15)
        if log_x:
            ax.set_xscale("log", base=2)
        if numeric:
            ax.set_xticks(xs, [str(v) for v in xs])
        else:
            ax.set_xticks(range(len(xs)), [str(v) for v in xs])
        values = values if isinstance(values, tuple) else (values,)
        ax.set_title(", ".join(f"{k.split('.')[-1]} = {v}" for k, v in zip(panel_keys, values)) or title, fontsize=9)
        ax.set_xlabel(x_key)
        ax.set_ylabel(f"{metric} ({'higher' if up else 'lower'} is better)", fontsize=8)
        ax.grid(alpha=0.3)
    for j in range(len(panels), rows * cols):
        axes[j // cols, j % cols].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    n = int(part.n.max())
    fig.suptitle(
        f"{title}: {metric}; bands: 95% intervals, n = {n}"
        if n > 1 or part.interval.any()
        else f"{title}: {metric} (one repeat: no bands)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def build(
    out_dir: Path,
    points: list[Point],
    keys: list[str],
    metrics: list[str],
    title: str,
    resamples: int,
    warn=_warn,
    provenance: str = "",
) -> pd.DataFrame:
    """Write sweep.csv (every metric), sweep.md and sweep-METRIC.png (the chosen metrics)."""
    out_dir = Path(out_dir)
    df = table(points, keys, resamples, warn)
    atomic.write_text(out_dir / "sweep.csv", df.to_csv(index=False))
    atomic.write_text(out_dir / "sweep.md", markdown(df, keys, metrics, title, provenance))
    wanted = {figure_path(out_dir, m) for m in metrics}
    for stale in out_dir.glob("sweep-*.png"):  # never a figure of a metric this sweep did not draw
        if stale not in wanted:
            stale.unlink()
    for m in metrics:
        if not plot(df, keys, m, figure_path(out_dir, m), title):
            figure_path(out_dir, m).unlink(missing_ok=True)
    return df


def figure_path(out_dir: Path, metric: str) -> Path:
    return Path(out_dir) / f"sweep-{metric.replace('/', '_')}.png"

"""Leaderboards (Markdown, CSV, PNG) built from result files alone.

A table never mixes suite versions, schema versions or protocols (suite parameters, training
budget, seed): per suite it shows the newest suite version and, within it, the protocol of the
newest run; anything else is named in a note under the table rather than silently blended in.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.core import atomic
from bench.report import results


def _directions(record) -> list[tuple[str, bool]]:
    return [(m, d == "higher") for m, d in record["suite"]["metric_directions"]]


def select(records: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    """Per suite, the comparable records; plus notes on what was left out and why."""
    by_suite: dict[str, list[dict]] = {}
    for r in records:
        by_suite.setdefault(r["suite"]["name"], []).append(r)
    chosen, notes = {}, []
    for suite, rs in sorted(by_suite.items()):
        newest = max(rs, key=lambda r: (r["suite"]["version"], r["created_utc"]))
        keep = [r for r in rs if r["suite"]["version"] == newest["suite"]["version"]
                and r["config"]["protocol_hash"] == newest["config"]["protocol_hash"]]
        left = [r for r in rs if r not in keep]
        if left:
            notes.append(f"{suite}: left out {', '.join(sorted(r['head']['name'] for r in left))} "
                         f"(older suite version or a different protocol than the newest run; rerun them to include)")
        chosen[suite] = keep
    return chosen, notes


def _order(rs: list[dict]) -> list[dict]:
    main = rs[0]["suite"]["main_metric"]
    up = dict(_directions(rs[0])).get(main, True)

    def key(r):
        kind = 0 if r["head"].get("kind") == "reference" else 1
        value = r["metrics"].get(main)
        return (kind, r["status"] != "ok", (-value if up else value) if value is not None else 0, r["head"]["name"])

    return sorted(rs, key=key)


def frame(rs: list[dict]) -> pd.DataFrame:
    metrics = [m for m, _ in _directions(rs[0])]
    rows = []
    for r in _order(rs):
        row = {"head": r["head"]["name"], "version": r["head"]["version"], "status": r["status"]}
        row.update({m: r["metrics"].get(m) for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows)


def _commit(r: dict) -> str:
    return (r.get("git_commit") or "unknown")[:10] + (" (dirty)" if r.get("git_dirty") else "")


def provenance_line(rs: list[dict]) -> str:
    """Which commits and dates the rows come from, stated for the rows, not for the newest one."""
    commits = sorted({_commit(r) for r in rs})
    dates = sorted(r["created_utc"][:10] for r in rs)
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    if len(commits) == 1:
        return f"Every row from commit `{commits[0]}`, computed {span}."
    return (f"Rows come from {len(commits)} commits ({', '.join(f'`{c}`' for c in commits)}), computed {span}: "
            "see the commit and date columns.")


def protocol_line(r: dict) -> str:
    """The protocol's resolved settings beside its hash, so nobody has to decode a hash."""
    resolved = r["config"]["resolved"]
    train = ", ".join(f"{k} {v}" for k, v in resolved.get("train", {}).items())
    suite = ", ".join(f"{k} {v}" for k, v in resolved.get("suite_params", {}).items())
    return f"Protocol `{r['config']['protocol_hash']}`: seed {resolved.get('seed')}; train: {train}; suite: {suite}."


def markdown_table(rs: list[dict]) -> str:
    df = frame(rs)
    directions = dict(_directions(rs[0]))
    heads_only = [r["head"].get("kind") != "reference" and r["status"] == "ok" for r in _order(rs)]
    shown = df[["head", "version"]].copy()
    for m, up in directions.items():
        col = df[m]
        candidates = col[heads_only].dropna()
        best = (candidates.max() if up else candidates.min()) if len(candidates) else None
        cells = []
        for value, is_head, status in zip(col, heads_only, df["status"]):
            if status != "ok":
                cells.append("failed")
            elif value is None or pd.isna(value):
                cells.append("")
            else:
                text = f"{value:.4f}"
                cells.append(f"**{text}**" if is_head and best is not None and value == best else text)
        shown[f"{m} {'↑' if up else '↓'}"] = cells
    if len({_commit(r) for r in rs}) > 1:
        ordered = _order(rs)
        shown["commit"] = [_commit(r) for r in ordered]
        shown["date"] = [r["created_utc"][:10] for r in ordered]
    return shown.to_markdown(index=False, disable_numparse=True)


def build_markdown(chosen: dict[str, list[dict]], notes: list[str], source: str = "results") -> str:
    parts = ["# simbench leaderboard", "",
             f"Built from `{source}/runs/` by `run_bench.py`; do not edit by hand. Bold: best head per column "
             "(reference rows such as `oracle` are ceilings, not contestants). ↑ higher is better, ↓ lower.", ""]
    for suite, rs in chosen.items():
        first = rs[0]
        parts += [f"## {suite} (suite v{first['suite']['version']}, schema v{first['schema_version']})", "",
                  f"Main metric: `{first['suite']['main_metric']}`. {provenance_line(rs)}", "",
                  protocol_line(first), "", markdown_table(rs), ""]
        failed = [r for r in rs if r["status"] != "ok"]
        for r in failed:
            parts.append(f"- `{r['head']['name']}` failed: {r['error']}")
        if failed:
            parts.append("")
    if notes:
        parts += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)


def build_csv(chosen: dict[str, list[dict]]) -> str:
    rows = []
    for suite, rs in chosen.items():
        for r in _order(rs):
            rows.append({"suite": suite, "suite_version": r["suite"]["version"], "schema_version": r["schema_version"],
                         "head": r["head"]["name"], "head_version": r["head"]["version"], "kind": r["head"].get("kind"),
                         "status": r["status"], **{f"metric:{k}": v for k, v in r["metrics"].items()},
                         "config_hash": r["config"]["hash"], "protocol_hash": r["config"]["protocol_hash"],
                         "seed": r["seed"], "git_commit": r.get("git_commit"), "created_utc": r["created_utc"]})
    return pd.DataFrame(rows).to_csv(index=False)


def build_plot(chosen: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(chosen)
    fig, axes = plt.subplots(len(suites), 1, figsize=(8, 2.2 + 0.9 * max(len(v) for v in chosen.values()) * max(1, len(suites))),
                             squeeze=False)
    for ax, suite in zip(axes[:, 0], suites):
        rs = [r for r in _order(chosen[suite]) if r["status"] == "ok"]
        metrics = rs[0]["suite"]["headline_metrics"] or [rs[0]["suite"]["main_metric"]]
        names = [r["head"]["name"] for r in rs]
        height = 0.8 / len(metrics)
        for i, m in enumerate(metrics):
            values = [r["metrics"].get(m, float("nan")) for r in rs]
            ax.barh([y + i * height for y in range(len(rs))], values, height=height, label=m)
        ax.set_yticks([y + height * (len(metrics) - 1) / 2 for y in range(len(rs))], names)
        ax.invert_yaxis()
        ax.set_title(f"{suite} (suite v{rs[0]['suite']['version']})")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def build(out_dir: Path, warn=print) -> str:
    """Write leaderboard.md/.csv/.png under ``out_dir``; return the Markdown."""
    out_dir = Path(out_dir)
    chosen, notes = select(results.load_all(out_dir, warn=warn))
    chosen = {s: rs for s, rs in chosen.items() if rs}
    if not chosen:
        for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png"):  # never leave a board of runs now gone
            (out_dir / name).unlink(missing_ok=True)
        return "No result files yet: run `python run_bench.py` first."
    md = build_markdown(chosen, notes, source=out_dir.as_posix())
    atomic.write_text(out_dir / "leaderboard.md", md)
    atomic.write_text(out_dir / "leaderboard.csv", build_csv(chosen))
    build_plot(chosen, out_dir / "leaderboard.png")
    return md

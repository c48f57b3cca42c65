"""The tuned leaderboard: each head at the setting its own trials chose on validation data, scored on
test with repeats, beside what was chosen, how many trials it had, and how sensitive it was."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.core import atomic
from bench.report import leaderboard, verdicts


def board_path(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / "tuned" / f"leaderboard-tuned-{suite}.md"


def _settings(params: dict) -> str:
    def show(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k.split('.', 1)[1]} {show(v)}" for k, v in sorted(params.items()))


def build(
    out_dir: Path,
    suite: str,
    records: list,
    chosen: dict,
    info: dict,
    reference: str | None = "cosine",
    resamples: int = 10_000,
    warn=print,
) -> str:
    """Markdown of the tuned board; ``chosen``: head -> HeadTuning; ``info``: trials, repeats, sampler, space."""
    rows = leaderboard.collapse_repeats(records)
    ref = reference if reference in chosen else None
    v = verdicts.for_suite(Path(out_dir) / "tuned", rows, ref, resamples, warn) if resamples else None
    main = rows[0].suite.main_metric
    up = rows[0].directions.get(main, True)
    val_up = info["validation_higher_is_better"]
    ordered = leaderboard._order(rows)
    table = pd.DataFrame({"head": [r.head.name for r in ordered]})
    table["n"] = [str(r.repeats.n if r.repeats else 1) for r in ordered]
    interval = v.intervals if v else {}
    best = v.best.get(main, set()) if v else set()
    table[f"{main} {'↑' if up else '↓'} (test)"] = [
        leaderboard._cell_text(
            r.metrics.get(main),
            r.status,
            r.head.name in best and r.head.name in chosen,
            interval.get(r.head.name, {}).get(main),
        )
        for r in ordered
    ]
    if v and v.reference:
        table[f"Δ vs {v.reference} [95% CI], p"] = [leaderboard._versus(v, r.head.name) for r in ordered]
    table["chosen setting"] = [
        _settings(chosen[r.head.name].best_params) if r.head.name in chosen else "" for r in ordered
    ]
    table["trials"] = [str(chosen[r.head.name].n) if r.head.name in chosen else "" for r in ordered]
    table[f"validation best / median / worst {'↑' if val_up else '↓'}"] = [
        f"{c.best:.4f} / {c.median:.4f} / {c.worst:.4f}" + (f" ({c.failed} failed)" if c.failed else "")
        if (c := chosen.get(r.head.name))
        else ""
        for r in ordered
    ]
    table["converged"] = [leaderboard.convergence_text(r) for r in ordered]
    lines = [
        f"# Tuned leaderboard: {suite}",
        "",
        f"Made by `{info['command']}`. Each head had {info['trials']} trials of the same search space "
        f"({info['space']}; sampler {info['sampler']}, seed {info['seed']}), judged on "
        f"`{info['validation_metric']}` over validation data only (the test set is sealed during trials). "
        f"Its best setting then ran on test {info['repeats']} time(s) (repeats vary the seed"
        f"{' and draw a new world' if suite == 'synthetic' else ''}); ± is the half-width of a 95% bootstrap "
        "interval that resamples repeats and test queries. Bold: the best head and every head tied with it. "
        "Sensitivity: the validation metric's best, median and worst value over the head's trials.",
        "",
        table.to_markdown(index=False, disable_numparse=True),
        "",
    ]
    text = "\n".join(lines)
    atomic.write_text(board_path(out_dir, suite), text)
    return text

"""``run_bench.py compare --suite S --heads A,B``: paired comparisons from saved per-query outcomes."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import DEFAULT_OUT, EXIT_OK, UsageError, add_output_flags, log
from bench.core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", required=True, help="the suite whose results to compare")
    p.add_argument("--heads", required=True, help="A,B[,C...]: A against each of the others")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"the folder the runs were written to (default: {DEFAULT_OUT}/)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap and randomization draws (default 10,000)")
    add_output_flags(p)


def command(args) -> int:
    """``run_bench.py compare``: per metric, A - B with its paired 95% bootstrap interval, the sign-flip
    p-value, and that p-value after Holm's correction across every metric and pair compared."""
    from bench.report import last_run, leaderboard, results, verdicts

    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if len(heads) < 2 or len(set(heads)) != len(heads):
        raise UsageError(
            f"--heads {args.heads!r}: name at least two different heads, A first (A is compared with each)."
        )
    if args.resamples < 100:
        raise UsageError(f"--resamples {args.resamples}: use at least 100 (10,000 for a p-value below 0.001).")
    loaded = results.load_all(Path(args.out), warn=log.warning)
    chosen, _ = leaderboard.select(loaded, last_run.read_all(Path(args.out), log.warning))
    if args.suite not in chosen:
        raise UsageError(
            f"no results of suite {args.suite!r} under {args.out}/runs; run it first "
            f"(run_bench.py --suite {args.suite} --out {args.out})."
        )
    comparable = {r.head.name for r in chosen[args.suite]}
    elsewhere = sorted({r.head.name for r in loaded if r.suite.name == args.suite} - comparable)
    for head in heads:
        if head not in comparable and head in elsewhere:
            raise UsageError(
                f"compare --suite {args.suite}: {head} has results under {args.out}/runs, but under another "
                "protocol or suite version than the latest run, so they are not comparable with it; rerun "
                f"{head} with the same settings (run_bench.py --suite {args.suite} --heads {head} --out {args.out})."
            )
    try:
        rows = verdicts.compare(
            Path(args.out),
            leaderboard.collapse_repeats(chosen[args.suite]),
            heads,
            args.resamples,
            warn=log.warning,
        )
    except UserError as exc:
        raise UsageError(f"compare --suite {args.suite}: {exc.args[0]}.") from None
    directions = chosen[args.suite][0].directions
    rows_by_head = {r.head.name: r for r in leaderboard.collapse_repeats(chosen[args.suite])}
    for head in heads:
        bad = leaderboard.not_converged(rows_by_head[head]) if head in rows_by_head else []
        for record in bad:
            c = record.convergence
            log.warning(
                f"warning: {head} (repeat {record.repeat}) is NOT CONVERGED: its {c['metric']} still improved by "
                f"{c['improvement_in_last_fraction']:.4g} (> {c['tolerance']}) over the last 20% of its "
                f"{c['steps_run']} steps, so a verdict about it may reflect the budget, not the head. Raise "
                "train.steps or tune it (run_bench.py tune)."
            )
    degenerate = {h for h in heads if h in rows_by_head and leaderboard.degenerate_text(rows_by_head[h])}
    for head in sorted(degenerate):
        log.warning(
            f"warning: {head} is DEGENERATE: {next(g.degenerate for g in _group(rows_by_head[head]) if g.degenerate)}. "
            "No verdict is given for it."
        )
    print(
        f"{args.suite}: {heads[0]} against {', '.join(heads[1:])}; differences A - B with paired 95% bootstrap "
        f"intervals over test queries, sign-flip p-values ({args.resamples:,} draws each), Holm-adjusted "
        "across all the rows below.\n"
    )
    print(f"{'metric':<44} {'B':<12} {'A - B':>9} {'95% interval':>21} {'p':>7} {'p Holm':>7}  verdict")
    for r in rows:
        up = directions.get(r["metric"], True)
        better = (r["difference"] > 0) == up
        verdict = "tied" if r["p_holm"] >= 0.05 else (f"{r['a']} better" if better else f"{r['b']} better")
        if {r["a"], r["b"]} & degenerate:
            verdict = f"none ({' and '.join(sorted({r['a'], r['b']} & degenerate))} degenerate)"
        print(
            f"{r['metric'][:44]:<44} {r['b'][:12]:<12} {r['difference']:>+9.4f} "
            f"[{r['low']:+.4f}, {r['high']:+.4f}] {r['p_value']:>7.4f} {r['p_holm']:>7.4f}  {verdict}"
        )
    print(
        "\nverdict: 'tied' unless the Holm-adjusted p-value is below 0.05. Metrics with no per-query form "
        "(correlations over all pairs) are not compared."
    )
    return EXIT_OK


def _group(row) -> list:
    return row.repeats.records if row.repeats else [row]

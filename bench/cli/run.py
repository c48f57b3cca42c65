"""``run_bench.py [run] --suite S``: plan, execute, rebuild the leaderboard, then check or rewrite a baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli import data, listing
from bench.cli.common import (
    DEFAULT_OUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_config_flags,
    add_head_flags,
    add_output_flags,
    file_config,
    flags,
    head_list,
    import_head_module,
    log,
)

EXAMPLES = """examples:
  run_bench.py                                   the synthetic suite, every head (about 2 minutes on 2 CPU cores)
  run_bench.py --heads cosine,kme_rbf --seed 1   two heads, another seed
  run_bench.py --suite retrieval --backbone ViT-B-32:openai --data-root /data
  run_bench.py --check results/baselines/synthetic.json   exit 1 if a head got worse
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--suite",
        default="synthetic",
        help="suite to run (default: synthetic), or 'all' for every suite whose data is ready; see --list-suites",
    )
    add_head_flags(p)
    add_config_flags(p)
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"output folder (default: {DEFAULT_OUT}/, git-ignored; results/ holds the published reference)",
    )
    p.add_argument(
        "--check", default=None, metavar="BASELINE", help="compare with this baseline; exit 1 on a regression"
    )
    p.add_argument(
        "--check-rule",
        choices=("interval", "exact"),
        default="interval",
        help="interval (default): a metric regresses when its whole paired 95%% interval against the "
        "baseline's per-query outcomes is worse than the tolerance; exact: when its value is "
        "(for bit-identical CPU runs)",
    )
    p.add_argument(
        "--update-baseline",
        default=None,
        nargs="?",
        const="",
        metavar="BASELINE",
        help="rewrite the baseline (default: the --check path, else OUT/baselines/SUITE.json)",
    )
    p.add_argument(
        "--check-data",
        action="store_true",
        help="print which datasets are ready under the data root (exit 1 if any is not) and exit (as `data`)",
    )
    p.add_argument("--list-heads", action="store_true", help="list registered heads and exit (as `list heads`)")
    p.add_argument("--list-suites", action="store_true", help="list registered suites and exit (as `list suites`)")
    p.add_argument(
        "--resamples",
        type=int,
        default=10_000,
        help="bootstrap resamples for the leaderboard's intervals and ties (default 10,000; 0: none)",
    )
    p.add_argument(
        "--reference-head",
        default="cosine",
        help="the head the leaderboard's summary compares every other head with (default: cosine)",
    )
    add_output_flags(p)


def parser(prog: str = "run_bench.py") -> argparse.ArgumentParser:
    """The run command's flags alone (the bare ``run_bench.py --suite ...`` form)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Compare similarity heads under one protocol.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def request(args):
    """The run's ``Request`` (bench/run/plan.py) from its flags; a regression check recomputes every cell
    it judges, since a reused cell cannot fail it."""
    from bench.run.plan import Request

    return Request(
        suite=args.suite,
        heads=head_list(args.heads),
        config=file_config(args),
        flags=flags(args),
        out=Path(args.out),
        device=args.device,
        force=args.force or bool(args.check),
        progress=not args.no_progress,
    )


def _checked_plan(args):
    from bench.report import regression
    from bench.run import plan as planning

    if args.suite == "all" and (args.check or args.update_baseline is not None):
        raise UsageError("--check and --update-baseline compare one suite; name it with --suite.")
    if args.check and args.update_baseline is not None:
        raise UsageError("--check judges a run against a baseline and --update-baseline rewrites one; use one of them.")
    if args.resamples != 0 and args.resamples < 100:
        raise UsageError(f"--resamples {args.resamples}: use 0 (no intervals) or at least 100 (10,000 by default).")
    plan = planning.plan(request(args))
    _check_reference_head(args.reference_head)
    if plan.cfg["repeats"] > 1 and (args.check or args.update_baseline is not None):
        raise UsageError(
            f"--check and --update-baseline judge one run per head; repeats = {plan.cfg['repeats']} makes "
            "several. Use --repeats 1 for the regression check."
        )
    baseline = regression.load(args.check) if args.check else None
    if baseline is not None:
        _precheck(args, plan, baseline)
    return plan, baseline


def _precheck(args, plan, baseline) -> None:
    """Refuse a baseline that cannot judge this run before the run is computed, not after."""
    from bench.report import regression
    from bench.run import runner

    sp = plan.suites[0]
    suite = sp.suite_cls(sp.params)
    protocol_hash, _ = runner._identify(suite, sp.suite_cls, sp.protocol, sp.cells, plan.cfg, plan.device)
    try:
        regression.precheck(
            baseline,
            Path(args.check),
            args.check_rule,
            sp.name,
            sp.suite_cls.version,
            protocol_hash,
            {c.head: c.options for c in sp.cells},
        )
    except regression.BaselineError as exc:
        raise UsageError(str(exc)) from None


def _check_reference_head(name: str) -> None:
    """A reference head that is not a head is a typo, not a request for no comparison."""
    import heads

    if name and name not in heads.list_heads():
        from bench.core.registry import suggest

        raise UsageError(
            f"--reference-head {name!r} is not a registered head.{suggest(name, heads.list_heads())} "
            "Name the head every other head is compared with (default: cosine)."
        )


def command(args) -> int:
    for spec in args.head_module:
        import_head_module(spec)
    if args.check_data:
        return data.check_data(args.data_root)
    if args.list_heads or args.list_suites:
        for kind in ("heads", "suites"):
            if getattr(args, f"list_{kind}"):
                print(listing.listing(kind))
        return EXIT_OK
    from bench.core import distributed
    from bench.run import plan as planning

    plan, baseline = _checked_plan(args)
    out = plan.out
    summaries, before, board = [], _runs_state(out), None
    try:
        partial, skipped = planning.execute(plan)
        summaries += partial
        for s in skipped:
            if s.data_not_ready:
                log.warning(
                    f"[{s.suite}] skipped, its data is not ready: {s.reason}\n  (`run_bench.py --check-data` shows "
                    "the expected layout and where to get it)"
                )
            else:
                log.warning(f"[{s.suite}] skipped: {s.reason}")
    finally:
        # Whatever happened, a leaderboard is rebuilt from what runs/ now holds, so the two never disagree;
        # a run refused before writing anything leaves every file as it was.
        if distributed.is_main() and (summaries or _runs_state(out) != before):
            board = _leaderboard(out, args)
    if not distributed.is_main():  # rank 0 reports, rewrites baselines and checks regressions
        return EXIT_FAILED if any(s.failed for s in summaries) else EXIT_OK
    if board is None:
        log.warning("no suite ran (see the messages above); nothing was written.")
        return EXIT_USAGE
    print()
    print(board)
    print(f"\nwritten to {out}/: leaderboard.md, leaderboard.csv, leaderboard-SUITE.png, runs/SUITE/HEAD.json")
    failed = [h for s in summaries for h in s.failed]
    status = EXIT_FAILED if failed else EXIT_OK
    if failed:
        log.warning(f"\n{len(failed)} head(s) failed: {', '.join(failed)} (see the result files).")
    if args.update_baseline is not None:
        _update_baseline(args, summaries[0])
    elif baseline is not None:
        return _check(args, summaries[0], baseline) or status
    return status


def _runs_state(out: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in (out / "runs").glob("*/*.json")}


def _leaderboard(out: Path, args) -> str:
    from bench.report import leaderboard

    return leaderboard.build(out, warn=log.warning, reference=args.reference_head, resamples=args.resamples)


def _update_baseline(args, summary) -> None:
    from bench.report import regression

    target = Path(args.update_baseline or f"{args.out}/baselines/{args.suite}.json")
    try:
        previous = regression.load(target, for_update=True) if target.exists() else None
        baseline, kept = regression.make(summary.records, previous)
        regression.attach_outcomes(baseline, target, Path(args.out), summary.records, previous)
        regression.write(target, baseline)
    except regression.BaselineError as exc:
        raise UsageError(str(exc)) from None
    print(f"\nbaseline rewritten: {target}")
    if kept:
        print(f"kept from the previous baseline (not in this run): {', '.join(kept)}")


def _check(args, summary, baseline) -> int:
    from bench.report import regression

    try:
        found, unjudged = regression.compare(
            summary.records, baseline, args.check_rule, Path(args.out), Path(args.check), args.resamples or 10_000
        )
    except regression.BaselineError as exc:
        raise UsageError(str(exc)) from None
    if unjudged:
        print(f"\nnot in {args.check} (no baseline to judge them by): {', '.join(unjudged)}")
    judged = sorted({r.head.name for r in summary.records} - set(unjudged))
    if found:
        print(
            f"\nREGRESSION ({args.check_rule} rule): {len(found)} metric(s) worse than {args.check} by more than "
            "their tolerance:\n"
        )
        print(regression.report(found))
        return EXIT_FAILED
    print(
        f"\nregression check passed against {args.check}: no metric of {', '.join(judged)} (all recomputed) "
        "dropped beyond its tolerance."
    )
    return EXIT_OK

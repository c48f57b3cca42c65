"""``run_bench.py sweep --grid KEY=V1,V2``: a suite over a grid of config values, one ordinary keyed run per
point, drawn as each metric against the values, one line per head."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import (
    DEFAULT_OUT,
    EXIT_FAILED,
    EXIT_OK,
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

DESCRIPTION = (
    "Run a suite over a grid of config values and draw each metric against them, one line per head. "
    "Every point is an ordinary run (validated, keyed, reused) in a folder of its own."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="synthetic", help="the suite to sweep (default: synthetic)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a config key and its values, e.g. heads.*.out_dim=2,4,8,16 (heads.*: every head that has the "
        "option) or suites.synthetic.topics=4,8,16; repeatable. The first is the x axis, the others "
        "make panels",
    )
    add_head_flags(p)
    add_config_flags(p)  # --config holds the settings every point shares
    p.add_argument("--out", default=f"{DEFAULT_OUT}/sweep", help=f"the sweep's folder (default: {DEFAULT_OUT}/sweep)")
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metrics to draw and tabulate (default: the suite's main and headline metrics); "
        "sweep.csv always holds every metric",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=10_000,
        help="bootstrap resamples for the bands (default 10,000; 0: intervals over repeats only)",
    )
    add_output_flags(p)


def command(args) -> int:
    """Every point planned and checked before the first one runs."""
    import time

    import heads
    import suites
    from bench.core import atomic, distributed
    from bench.report import provenance
    from bench.report import sweep as sweep_report
    from bench.run import config, sweep
    from bench.run import plan as planning
    from bench.run.code_identity import code_identity
    from bench.run.plan import Request

    for spec in args.head_module:
        import_head_module(spec)
    out = Path(args.out)
    axes = sweep.parse_grid(args.grid)
    suite_cls = suites.get_suite(args.suite)
    head_names = head_list(args.heads) or (heads.list_heads() if args.heads is None else [])
    if not head_names or len(set(head_names)) != len(head_names):
        raise UsageError(f"--heads {args.heads!r}: name each head once (see --list-heads).")
    for h in head_names:
        heads.get_head(h)
    _check_axes(args, axes, head_names)
    if args.resamples != 0 and args.resamples < 100:
        raise UsageError(f"--resamples {args.resamples}: use 0 or at least 100 (10,000 by default).")
    user = config.with_flags(file_config(args), {"seed": args.seed, "repeats": args.repeats}, {}, args.suite)
    device = distributed.init(args.device) or provenance.resolve_device(args.device)
    planned = []
    for i, point in enumerate(sweep.points(axes)):
        folder = out / "points" / sweep.point_name(axes, point, i)
        shared = {**flags(args), "seed": None, "repeats": None}  # seed and repeats are in ``user`` already
        req = Request(
            args.suite,
            head_names,
            sweep.apply(user, point),
            shared,
            folder,
            args.device,
            args.force,
            not args.no_progress,
        )
        planned.append((point, folder, planning.plan(req, device)))
        plan = planned[-1][2]
        sweep.ran_as_labelled(axes, point, plan.cfg, [c for sp in plan.suites for c in sp.cells])
    metrics = _metrics(args, suite_cls)
    planning.check_out_dir(out)
    version = provenance.code_version()  # read now: edits or commits made while the sweep runs change nothing
    for h in head_names:
        code_identity(heads.get_head(h), suite_cls)
    keys = [a.key for a in axes]
    points, failed, t0 = [], [], time.perf_counter()
    for n, (point, folder, plan) in enumerate(planned, 1):
        if distributed.is_main():
            log.warning(f"[sweep {n}/{len(planned)}] " + ", ".join(f"{k} = {v}" for k, v in point.items()))
        summaries, _ = planning.execute(plan)
        records = [r for s in summaries for r in s.records]
        failed += [f"{h} at {folder.name}" for s in summaries for h in s.failed]
        points.append(sweep_report.Point(point, folder, records))
    if not distributed.is_main():
        return EXIT_OK
    title = f"{args.suite} sweep over {', '.join(a.label for a in axes)}"
    made_by = (
        f"Made by `python run_bench.py sweep {' '.join(args.argv)}` at commit {str(version['git_commit'])[:12]}"
        f"{' (uncommitted changes)' if version['git_dirty'] else ''}; each point's runs are under "
        f"points/ (sweep.json lists them), every metric is in sweep.csv."
    )
    sweep_report.build(out, points, keys, metrics, title, args.resamples, warn=log.warning, provenance=made_by)
    atomic.write_json(
        out / "sweep.json",
        {
            "suite": args.suite,
            "heads": head_names,
            "axes": [{"key": a.key, "values": list(a.values)} for a in axes],
            "repeats": planned[0][2].cfg["repeats"],
            "shared_config": user,
            "metrics": metrics,
            "points": [{"values": p.values, "folder": p.folder.name} for p in points],
            "command": "run_bench.py sweep " + " ".join(args.argv),
            **version,
            "created_utc": provenance.utc_now(),
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )
    print(
        f"\nsweep of {len(points)} point(s) written to {out}/: sweep.md, sweep.csv, "
        + ", ".join(sweep_report.figure_path(out, m).name for m in metrics)
    )
    print((out / "sweep.md").read_text())
    if failed:
        log.warning(f"\n{len(failed)} cell(s) failed: {', '.join(failed)} (see their result files).")
        return EXIT_FAILED
    return EXIT_OK


def _check_axes(args, axes, head_names: list[str]) -> None:
    """A key the run would ignore would make every point the same run."""
    from bench.run import config

    for a in axes:
        parts = a.key.split(".")
        if a.key == "seed" and args.seed is not None:
            raise UsageError(
                f"--seed {args.seed} and --grid seed=... both set the seed, and the grid would win silently; "
                "give one of them."
            )
        if parts[0] == "suites" and parts[1] != args.suite:
            raise UsageError(
                f"--grid {a.key}: this sweep runs suite {args.suite!r}, so suites.{parts[1]} would "
                f"change nothing; write suites.{args.suite}.{parts[2]}."
            )
        if parts[0] == "heads" and parts[1] != config.EVERY_HEAD and parts[1] not in head_names:
            raise UsageError(
                f"--grid {a.key}: head {parts[1]!r} is not in this sweep's heads "
                f"({', '.join(head_names)}); add it to --heads or use heads.*.{parts[2]}."
            )


def _metrics(args, suite_cls) -> list[str]:
    from bench.core.registry import suggest

    metrics = (
        [m.strip() for m in args.metrics.split(",") if m.strip()]
        if args.metrics
        else list(dict.fromkeys([suite_cls.main_metric, *suite_cls.headline_metrics]))
    )
    for m in metrics:
        if m not in suite_cls.metrics:
            raise UsageError(
                f"--metrics: suite {args.suite!r} has no metric {m!r}.{suggest(m, list(suite_cls.metrics))}"
            )
    return metrics

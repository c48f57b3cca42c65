"""Command line: parse, hand over to bench, exit with a clear status.

Exit codes: 0 success; 1 a regression against the baseline, or a head failed; 2 bad input
(unknown name, bad config, missing file), reported in one message that says how to fix it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from bench.core.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BUG_REPORT = (
    "This is a bug in simbench, not a problem with your input: please open an issue with the traceback "
    "above, the command you ran and the output of `pip freeze`."
)
DEFAULT_OUT = "outputs"  # a user's runs; results/ is the committed reference, rewritten only on purpose


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_bench.py", description="Compare similarity heads under one protocol.")
    p.add_argument(
        "--suite",
        default="synthetic",
        help="suite to run (default: synthetic), or 'all' for every suite whose data is ready; see --list-suites",
    )
    p.add_argument("--heads", default=None, help="comma-separated heads (default: every registered head)")
    p.add_argument(
        "--head-module",
        action="append",
        default=[],
        metavar="FILE_OR_MODULE",
        help="import this .py file or dotted module first, so the heads it registers can run (repeatable)",
    )
    p.add_argument("--config", default=None, help="YAML file with seed / train / heads / suites sections")
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"output folder (default: {DEFAULT_OUT}/, git-ignored; results/ holds the published reference)",
    )
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="run every cell N times (config: repeats), each varying the seed, random features and the "
        "synthetic world; the leaderboard shows means, intervals and n",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
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
        help="rewrite the baseline (default: the --check path, else results/baselines/SUITE.json)",
    )
    p.add_argument("--force", action="store_true", help="recompute cells whose results already exist")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--backbone",
        default=None,
        metavar="NAME[:PRETRAINED]",
        help="open_clip model name or config JSON, optionally :tag or :checkpoint (real-data suites)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="datasets folder (default: $SIMBENCH_DATA, else ./data), one folder per dataset",
    )
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="leave undecodable images out (listed in the result file) instead of failing the run",
    )
    p.add_argument(
        "--check-data",
        action="store_true",
        help="print which datasets are ready under the data root (exit 1 if any is not) and exit",
    )
    p.add_argument("--list-heads", action="store_true", help="list registered heads and exit")
    p.add_argument("--list-suites", action="store_true", help="list registered suites and exit")
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
    return p


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_bench.py compare",
        description="Paired comparison of heads from their saved per-query outcomes (no rerun).",
    )
    p.add_argument("--suite", required=True, help="the suite whose results to compare")
    p.add_argument("--heads", required=True, help="A,B[,C...]: A against each of the others")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"the folder the runs were written to (default: {DEFAULT_OUT}/)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap and randomization draws (default 10,000)")
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)  # accepted like the main command's
    return p


def _compare(argv: list[str]) -> int:
    """``run_bench.py compare``: per metric, A - B with its paired 95% bootstrap interval, the sign-flip
    p-value, and that p-value after Holm's correction across every metric and pair compared."""
    from bench.report import leaderboard, results, verdicts

    args = compare_parser().parse_args(argv)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if len(heads) < 2 or len(set(heads)) != len(heads):
        raise UsageError(
            f"--heads {args.heads!r}: name at least two different heads, A first (A is compared with each)."
        )
    if args.resamples < 100:
        raise UsageError(f"--resamples {args.resamples}: use at least 100 (10,000 for a p-value below 0.001).")
    chosen, _ = leaderboard.select(results.load_all(Path(args.out), warn=lambda m: print(m, file=sys.stderr)))
    if args.suite not in chosen:
        raise UsageError(
            f"no results of suite {args.suite!r} under {args.out}/runs; run it first "
            f"(run_bench.py --suite {args.suite} --out {args.out})."
        )
    try:
        rows = verdicts.compare(
            Path(args.out),
            leaderboard.collapse_repeats(chosen[args.suite]),
            heads,
            args.resamples,
            warn=lambda m: print(m, file=sys.stderr),
        )
    except UserError as exc:
        raise UsageError(f"compare --suite {args.suite}: {exc.args[0]}.") from None
    directions = chosen[args.suite][0].directions
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
        print(
            f"{r['metric'][:44]:<44} {r['b'][:12]:<12} {r['difference']:>+9.4f} "
            f"[{r['low']:+.4f}, {r['high']:+.4f}] {r['p_value']:>7.4f} {r['p_holm']:>7.4f}  {verdict}"
        )
    print(
        "\nverdict: 'tied' unless the Holm-adjusted p-value is below 0.05. Metrics with no per-query form "
        "(correlations over all pairs) are not compared."
    )
    return EXIT_OK


def sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_bench.py sweep",
        description="Run a suite over a grid of config values and draw each metric against them, one line per head. "
        "Every point is an ordinary run (validated, keyed, reused) in a folder of its own.",
    )
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
    p.add_argument("--heads", default=None, help="comma-separated heads (default: every registered head)")
    p.add_argument(
        "--head-module",
        action="append",
        default=[],
        metavar="FILE_OR_MODULE",
        help="import this .py file or dotted module first (repeatable)",
    )
    p.add_argument("--config", default=None, help="YAML file with the settings every point shares")
    p.add_argument("--out", default=f"{DEFAULT_OUT}/sweep", help=f"the sweep's folder (default: {DEFAULT_OUT}/sweep)")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    p.add_argument("--repeats", type=int, default=None, help="runs of every cell at every point (bands need 2 or more)")
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metrics to draw and tabulate (default: the suite's main and headline metrics); "
        "sweep.csv always holds every metric",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--backbone", default=None, metavar="NAME[:PRETRAINED]", help="as for a run (real-data suites)")
    p.add_argument("--data-root", default=None, help="as for a run (real-data suites)")
    p.add_argument("--skip-corrupt", action="store_true", help="as for a run")
    p.add_argument("--force", action="store_true", help="recompute cells whose results already exist")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--resamples",
        type=int,
        default=10_000,
        help="bootstrap resamples for the bands (default 10,000; 0: intervals over repeats only)",
    )
    return p


def _sweep(argv: list[str]) -> int:
    """``run_bench.py sweep``: every point planned and checked before the first one runs."""
    import time

    import heads
    import suites
    from bench.core import atomic, distributed
    from bench.report import provenance
    from bench.report import sweep as sweep_report
    from bench.run import config, runner, sweep
    from bench.run.code_identity import code_identity

    args = sweep_parser().parse_args(argv)
    for spec in args.head_module:
        import_head_module(spec)
    out = Path(args.out)
    try:
        axes = sweep.parse_grid(args.grid)
        suite_cls = suites.get_suite(args.suite)
        head_names = _head_names(args)
        if not head_names or len(set(head_names)) != len(head_names):
            raise UsageError(f"--heads {args.heads!r}: name each head once (see --list-heads).")
        for h in head_names:
            heads.get_head(h)
        for a in axes:  # a key the run would ignore would make every point the same run
            parts = a.key.split(".")
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
        if args.resamples != 0 and args.resamples < 100:
            raise UsageError(f"--resamples {args.resamples}: use 0 or at least 100 (10,000 by default).")
        user = _user_config(args)
        device = distributed.init(args.device) or provenance.resolve_device(args.device)
        planned = []
        for i, point in enumerate(sweep.points(axes)):
            cfg = config.resolve(sweep.apply(user, point))
            _apply_suite_flags(args, cfg, [args.suite])
            for repeat in range(cfg["repeats"]):
                runner.plan(args.suite, head_names, cfg, device, repeat)
            planned.append((point, out / "points" / sweep.point_name(axes, point, i), cfg))
        metrics = (
            [m.strip() for m in args.metrics.split(",") if m.strip()]
            if args.metrics
            else list(dict.fromkeys([suite_cls.main_metric, *suite_cls.headline_metrics]))
        )
        for m in metrics:
            if m not in suite_cls.metrics:
                from bench.core.registry import suggest

                raise UsageError(
                    f"--metrics: suite {args.suite!r} has no metric {m!r}.{suggest(m, list(suite_cls.metrics))}"
                )
        check_out_dir(out)
    except UserError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None
    version = provenance.code_version()  # read now: edits or commits made while the sweep runs change nothing
    for h in head_names:
        code_identity(heads.get_head(h), suite_cls)
    keys = [a.key for a in axes]
    run_args = argparse.Namespace(force=args.force, check=None, no_progress=args.no_progress)
    points, failed, t0 = [], [], time.perf_counter()
    for n, (point, folder, cfg) in enumerate(planned, 1):
        if distributed.is_main():
            print(f"[sweep {n}/{len(planned)}] " + ", ".join(f"{k} = {v}" for k, v in point.items()), file=sys.stderr)
        records = []
        for repeat in range(cfg["repeats"]):
            summary = _run_one(run_args, args.suite, head_names, cfg, folder, device, False, repeat)
            if summary is None:
                return EXIT_USAGE
            records += summary.records
            failed += [f"{h} at {folder.name}" for h in summary.failed]
        points.append(sweep_report.Point(point, folder, records))
    if not distributed.is_main():
        return EXIT_OK
    title = f"{args.suite} sweep over {', '.join(a.label for a in axes)}"
    made_by = (
        f"Made by `python run_bench.py sweep {' '.join(argv)}` at commit {str(version['git_commit'])[:12]}"
        f"{' (uncommitted changes)' if version['git_dirty'] else ''}; each point's runs are under "
        f"points/ (sweep.json lists them), every metric is in sweep.csv."
    )
    sweep_report.build(
        out, points, keys, metrics, title, args.resamples, warn=lambda m: print(m, file=sys.stderr), provenance=made_by
    )
    atomic.write_json(
        out / "sweep.json",
        {
            "suite": args.suite,
            "heads": head_names,
            "axes": [{"key": a.key, "values": list(a.values)} for a in axes],
            "repeats": planned[0][2]["repeats"],
            "shared_config": user,
            "metrics": metrics,
            "points": [{"values": p.values, "folder": p.folder.name} for p in points],
            "command": "run_bench.py sweep " + " ".join(argv),
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
        print(f"\n{len(failed)} cell(s) failed: {', '.join(failed)} (see their result files).", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class UsageError(UserError):
    """Bad input found by the command line itself; printed as one line, exit 2."""


def _user_config(args) -> dict:
    """The --config file with --seed and --repeats applied (checked later by config.resolve)."""
    from bench.run import config

    user = config.load_yaml(args.config)
    if args.seed is not None:
        user["seed"] = args.seed
    if args.repeats is not None:
        user["repeats"] = args.repeats
    return user


def _head_names(args) -> list[str]:
    import heads

    return heads.list_heads() if args.heads is None else [h.strip() for h in args.heads.split(",") if h.strip()]


def import_head_module(spec: str) -> None:
    """Import a user's head module by file path or dotted name; errors name the file and the cause."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise UsageError(f"--head-module {spec!r}: no such file.")
            module_spec = importlib.util.spec_from_file_location(f"simbench_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except UsageError:
        raise
    except Exception as exc:  # a user's file can raise anything; say which file and what
        raise UsageError(f"--head-module {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc


def _listing(kind: str) -> str:
    import pandas as pd

    if kind == "heads":
        import textwrap

        import heads
        from bench.core.errors import ConfigError
        from bench.run import config

        lines = [
            "Heads (set options under heads.NAME in --config; every option below is recorded in each result).",
            "Readout: layers = the pooled token at the last L blocks; tokens = every token of the last block.",
        ]
        for n in heads.list_heads():
            c = heads.get_head(n)
            try:
                opts = config.head_options(c, {}, f"heads.{n}")
                shown = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in opts.items())
            except ConfigError as exc:
                shown = str(exc)
            scores = "direction-specific scores" if c.directional_scores() else "one score for both directions"
            lines += [
                "",
                f"{n} (v{c.version}, {'trainable' if c.trainable else 'trains nothing'}, readout: {c.readout}, "
                f"{scores})",
            ]
            lines += textwrap.wrap(c.description, 100, initial_indent="  ", subsequent_indent="  ")
            lines += textwrap.wrap(f"options: {shown or 'none'}", 100, initial_indent="  ", subsequent_indent="    ")
        return "\n".join(lines)
    else:
        import suites

        rows = [
            {"suite": n, "version": c.version, "main metric": c.main_metric, "description": c.description}
            for n in suites.list_suites()
            for c in [suites.get_suite(n)]
        ]
    return pd.DataFrame(rows).to_markdown(index=False)


def data_root(arg: str | None) -> Path:
    from bench.data import default_root

    return default_root(arg)


def _check_data(args) -> int:
    """Which datasets are ready: a short table, then for each missing one its problem, layout and
    source, wrapped to 100 columns."""
    import textwrap

    from bench.data import classification_data, probe_data, retrieval_data

    root = data_root(args.data_root)
    rows = [{"task": "retrieval", **r} for r in retrieval_data.check_all(root)]
    rows += [{"task": "linear_probe", **r} for r in probe_data.check_all(root)]
    for name, (layout, source) in classification_data.LAYOUTS.items():
        try:
            ds = classification_data.load(root, name)
            rows.append(
                {
                    "task": "classification",
                    "dataset": name,
                    "ready": True,
                    "detail": f"{len(ds.image_paths)} images, {len(ds.classnames)} classes",
                }
            )
        except classification_data.DataError as exc:
            rows.append(
                {
                    "task": "classification",
                    "dataset": name,
                    "ready": False,
                    "detail": str(exc),
                    "layout": layout,
                    "source": source,
                }
            )
    lines = [f"data root: {root.resolve()}", "", f"{'task':<15} {'dataset':<17} {'ready':<6} detail"]
    for r in rows:
        detail = r["detail"] if r["ready"] else "missing or incomplete (below)"
        lines.append(f"{r['task']:<15} {r['dataset']:<17} {'yes' if r['ready'] else 'no':<6} {detail}"[:100])
    missing = [r for r in rows if not r["ready"]]
    if missing:
        lines += ["", "What is missing, the layout expected and where to get it:"]

    def block(label: str, text: str) -> list[str]:
        out = []
        for i, para in enumerate(str(text).strip("\n").splitlines()):
            first = f"  {label:<8} " if i == 0 else " " * 11
            out += textwrap.wrap(
                para.strip(),
                100,
                initial_indent=first,
                subsequent_indent=" " * 13,
                break_long_words=False,
                break_on_hyphens=False,
            ) or [first]
        return out

    for r in missing:
        problem = r["detail"].split(" Expected layout")[0].splitlines()[0]
        lines += [
            "",
            f"{r['dataset']} ({r['task']})",
            *block("problem", problem),
            *block("layout", r["layout"]),
            *block("source", r["source"]),
        ]
    print("\n".join(lines))
    return EXIT_OK if all(r["ready"] for r in rows) else EXIT_FAILED


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: atomic writes clean up, finished cells stay


def _report_bug(exc_type, exc, tb) -> None:
    """Uncaught exceptions are simbench's bugs (bad input never gets this far): the traceback, then one
    line saying so; the interpreter exits 1."""
    sys.__excepthook__(exc_type, exc, tb)
    if not issubclass(exc_type, KeyboardInterrupt):
        print(BUG_REPORT, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    sys.excepthook = _report_bug
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] in (["compare"], ["sweep"]):
        from bench.core import snapshot

        try:
            with snapshot.frozen():  # a sweep runs for hours: its cells are keyed by the code it started with
                return (_compare if argv[0] == "compare" else _sweep)(argv[1:])
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted: finished cells are saved; run the same command again to resume.", file=sys.stderr)
            return 130
    args = parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return _main(args)
    except UserError as exc:
        from bench.core import distributed

        if not distributed.is_main():
            return EXIT_USAGE
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; run the same command again to resume.", file=sys.stderr)
        return 130


def _main(args) -> int:
    from bench.core import distributed, snapshot

    try:
        with snapshot.frozen():  # every cell of this run keyed by the code and commit it started with
            return _run(args)
    finally:
        distributed.shutdown()


def _apply_suite_flags(args, cfg: dict, suite_names: list[str]) -> None:
    """--backbone, --data-root and --skip-corrupt set the parameter of every suite that has it."""
    import suites

    for flag, key, value in (
        ("--backbone", "backbone", args.backbone),
        ("--data-root", "data_root", args.data_root),
        ("--skip-corrupt", "skip_corrupt", True if args.skip_corrupt else None),
    ):
        if value is None:
            continue
        takers = [n for n in suite_names if key in suites.get_suite(n).default_params()]
        if not takers:
            raise UsageError(f"{flag} does not apply to suite {args.suite!r} (it has no {key!r} parameter).")
        for name in takers:
            cfg["suites"].setdefault(name, {})[key] = str(data_root(value)) if key == "data_root" else value


def check_out_dir(out: Path) -> None:
    """--out must be a folder this process can write: checked before any work, without creating it."""
    from bench.core import atomic

    problem = atomic.folder_problem(out)
    if problem:
        fix = (
            "pass another folder"
            if "cannot be created" in problem
            else "pass a folder (it is created if missing)"
            if "not a folder" in problem
            else "pass a folder you can write to"
        )
        raise UsageError(f"--out {str(out)!r} {problem}; {fix}.")


def _plan_run(args):
    """Everything a user can get wrong, checked before any work: names, config, options, device, paths."""
    import suites
    from bench.core import distributed
    from bench.report import provenance, regression
    from bench.run import config, runner

    try:
        everything = args.suite == "all"
        suite_names = suites.list_suites() if everything else [args.suite]
        if not everything:
            suites.get_suite(args.suite)
        elif args.check or args.update_baseline is not None:
            raise UsageError("--check and --update-baseline compare one suite; name it with --suite.")
        if args.check and args.update_baseline is not None:
            raise UsageError(
                "--check judges a run against a baseline and --update-baseline rewrites one; use one of them."
            )
        if args.seed is not None and not 0 <= args.seed <= config.MAX_SEED:
            raise UsageError(f"--seed {args.seed} is out of range; use an integer from 0 to {config.MAX_SEED}.")
        if args.resamples != 0 and args.resamples < 100:
            raise UsageError(f"--resamples {args.resamples}: use 0 (no intervals) or at least 100 (10,000 by default).")
        cfg = config.resolve(_user_config(args))
        if cfg["repeats"] > 1 and (args.check or args.update_baseline is not None):
            raise UsageError(
                f"--check and --update-baseline judge one run per head; repeats = {cfg['repeats']} makes "
                "several. Use --repeats 1 for the regression check."
            )
        _apply_suite_flags(args, cfg, suite_names)
        head_names = _head_names(args)
        if not head_names:
            raise UsageError("--heads is empty; name at least one head (see --list-heads).")
        if len(set(head_names)) != len(head_names):
            raise UsageError(f"--heads {args.heads!r} names a head twice; list each once.")
        device = distributed.init(args.device) or provenance.resolve_device(args.device)
        for name in suite_names:
            runner.plan(name, head_names, cfg, device)  # every name and option checked before any work
        baseline = regression.load(args.check) if args.check else None
        check_out_dir(Path(args.out))
    except UserError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None
    return everything, suite_names, cfg, head_names, device, baseline


def _run(args) -> int:
    for spec in args.head_module:
        import_head_module(spec)
    if args.check_data:
        return _check_data(args)
    if args.list_heads or args.list_suites:
        if args.list_heads:
            print(_listing("heads"))
        if args.list_suites:
            print(_listing("suites"))
        return EXIT_OK
    from bench.core import distributed

    everything, suite_names, cfg, head_names, device, baseline = _plan_run(args)
    out = Path(args.out)
    summaries, before, board = [], _runs_state(out), None
    try:
        for name in suite_names:
            for repeat in range(cfg["repeats"]):  # each repeat's cells are their own, resumable
                summary = _run_one(args, name, head_names, cfg, out, device, everything, repeat)
                if summary is None:
                    break
                summaries.append(summary)
    finally:
        # Whatever happened, a leaderboard is rebuilt from what runs/ now holds, so the two never disagree;
        # a run refused before writing anything leaves every file as it was.
        if distributed.is_main() and (summaries or _runs_state(out) != before):
            board = _leaderboard(out, args)
    if not distributed.is_main():  # rank 0 reports, rewrites baselines and checks regressions
        return EXIT_FAILED if any(s.failed for s in summaries) else EXIT_OK
    if board is None:
        print("no suite ran (see the messages above); nothing was written.", file=sys.stderr)
        return EXIT_USAGE
    print()
    print(board)
    failed = [h for s in summaries for h in s.failed]
    status = EXIT_FAILED if failed else EXIT_OK
    if failed:
        print(f"\n{len(failed)} head(s) failed: {', '.join(failed)} (see the result files).", file=sys.stderr)
    if args.update_baseline is not None:
        _update_baseline(args, summaries[0])
    elif baseline is not None:
        return _check(args, summaries[0], baseline) or status
    return status


def _runs_state(out: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in (out / "runs").glob("*/*.json")}


def _leaderboard(out: Path, args) -> str:
    from bench.report import leaderboard

    return leaderboard.build(
        out, warn=lambda m: print(m, file=sys.stderr), reference=args.reference_head, resamples=args.resamples
    )


def _run_one(args, name, head_names, cfg, out, device, everything, repeat: int = 0):
    """One suite; data problems skip it under --suite all and are a usage error otherwise."""
    from bench.core.errors import DataError, UserError
    from bench.run import runner
    from suites.backbone_suite import CorruptImages

    try:
        # A regression check recomputes every cell it judges: a reused cell cannot fail it.
        return runner.run_suite(
            name,
            head_names,
            cfg,
            out,
            device,
            force=args.force or bool(args.check),
            progress=not args.no_progress,
            repeat=repeat,
        )
    except CorruptImages as exc:  # the list of files is the message: never shortened
        if not everything:
            raise UsageError(str(exc)) from None
        print(f"[{name}] skipped: {exc}", file=sys.stderr)
    except DataError as exc:
        if not everything:
            raise UsageError(f"{exc}\n(run `run_bench.py --check-data` to see what is ready)") from None
        reason = str(exc).split(" Expected layout")[0]  # whole sentences; the layout is --check-data's to show
        print(
            f"[{name}] skipped, its data is not ready: {reason}\n  (`run_bench.py --check-data` shows the "
            "expected layout and where to get it)",
            file=sys.stderr,
        )
    except UserError as exc:
        raise UsageError(str(exc)) from None
    return None


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

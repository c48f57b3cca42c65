"""``run_bench.py tune --suite S --heads A,B --trials N``: equal-budget tuning on validation data, then
each head's chosen setting on test with repeats, and the tuned leaderboard (bench/run/tune.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import (
    DEFAULT_OUT,
    EXIT_FAILED,
    EXIT_OK,
    add_config_flags,
    add_head_flags,
    add_output_flags,
    file_config,
    flags,
    head_list,
    import_head_module,
    log,
)

DESCRIPTION = "tune every head with the same trials on validation data, then score the chosen settings on test"
EXAMPLES = """examples:
  run_bench.py tune --heads cosine,kme_proto --trials 8          the synthetic suite, 8 trials per head
  run_bench.py tune --trials 16 --space my_space.yaml --sampler tpe
  run_bench.py tune --trials 32 --workers 2                        two local worker processes, one study
  run_bench.py tune --trials 32 --storage postgresql://host/db --join   another machine joins the study
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--suite", default="synthetic", help="the suite to tune on (default: synthetic)")
    add_head_flags(p)
    p.add_argument("--trials", type=int, default=8, help="trials per head, the same for every head (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="test runs of each head's chosen setting (default 3)")
    p.add_argument(
        "--space",
        default=None,
        metavar="FILE.yaml",
        help="search space (train.SETTING / head.OPTION: {low, high, log}); default: lr, weight decay, warm-up "
        "and each head's tunable options",
    )
    p.add_argument("--sampler", default="qmc", help="qmc (default: one quasi-random design for every head) or tpe")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: a SQLAlchemy URL (sqlite:///x.db, postgresql://...) or journal:PATH "
        "(default: a journal file under OUT/tuning/)",
    )
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing the study (default 1)")
    p.add_argument("--join", action="store_true", help="only run trials of an existing study (a worker), then exit")
    add_config_flags(p, repeats=False)  # --config, --seed (also the sampler's), --device, --backbone, ...
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}/)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples for the tuned board")
    p.add_argument("--reference-head", default="cosine", help="the head the tuned board compares with")
    add_output_flags(p)


def command(args) -> int:
    from bench.report import tuned
    from bench.run import plan as planning
    from bench.run import tune

    for spec in args.head_module:
        import_head_module(spec)
    given = {**flags(args), "repeats": None}
    request = planning.Request(
        suite=args.suite,
        heads=head_list(args.heads),
        config=file_config(args),
        flags=given,
        out=Path(args.out),
        device=args.device,
        force=args.force,
        progress=not args.no_progress,
    )
    tp = tune.plan(
        request,
        args.trials,
        args.repeats,
        args.sampler,
        Path(args.space) if args.space else None,
        args.storage,
        args.workers,
    )
    argv = ["tune", *_without([a for a in args.argv if a != "--join"], "--workers")]
    result = tune.execute(tp, argv, join=args.join)
    if args.join:
        log.info("[tune] this worker's share of the trials is done")
        return EXIT_OK
    records, chosen = result
    if not chosen:
        log.error("[tune] no head completed a trial (every trial failed; see the trial records under OUT/tuning/)")
        return EXIT_FAILED
    info = {
        "command": "run_bench.py tune " + " ".join(args.argv),
        "trials": args.trials,
        "repeats": args.repeats,
        "sampler": args.sampler,
        "space": tp.space_source,
        "seed": tp.base.cfg["seed"],
        "validation_metric": f"validation/{tp.validation.metric}",
        "validation_higher_is_better": tp.validation.higher_is_better,
    }
    text = tuned.build(tp.out, args.suite, records, chosen, info, args.reference_head, args.resamples, log.warning)
    print(text)
    print(f"written to {tuned.board_path(tp.out, args.suite)}")
    return EXIT_OK


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (either ``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out

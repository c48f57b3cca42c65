"""Tuning throughput: trials per hour with 1 and with 2 local workers, in one run, as a ratio.

    python -m bench.tools.tune_speed                       # cosine, kme_proto; 8 trials each; ~4 min on 2 cores
    python -m bench.tools.tune_speed --heads all --trials 8 --final   # also the whole `tune --trials 8`

Each configuration runs `run_bench.py tune ... --join` (trials only) in a fresh output folder, every
process with one thread (OMP_NUM_THREADS=1), so 2 workers on 2 cores use the machine the way 2 users
would. ``--final`` times the whole command (trials, then each head's best setting on test 3 times and
the tuned board) with 1 worker and torch's default threads.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.core import environment

ROOT = Path(__file__).resolve().parents[2]


def timed(args: list[str], threads: str | None = "1") -> float:
    env = environment.child_env(**({"OMP_NUM_THREADS": threads} if threads else {}))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "run_bench.py"), "tune", *args, "--no-progress", "--quiet"],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", default="cosine,kme_proto", help="comma-separated, or 'all'")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--final", action="store_true", help="also time the whole tune command (1 worker)")
    args = ap.parse_args(argv)
    heads = [] if args.heads == "all" else ["--heads", args.heads]
    n = args.trials * (9 if args.heads == "all" else len(args.heads.split(",")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            seconds = timed(
                [*heads, "--trials", str(args.trials), "--workers", str(workers), "--join", "--out", str(out)]
            )
            rows.append((workers, seconds, n / seconds * 3600))
        if args.final:
            whole = timed([*heads, "--trials", str(args.trials), "--out", str(Path(tmp) / "final")], threads=None)
    print("| workers | trials | seconds | trials per hour |\n|---|---|---|---|")
    for workers, seconds, per_hour in rows:
        print(f"| {workers} | {n} | {seconds:.0f} | {per_hour:.0f} |")
    print(f"\n2 workers / 1 worker: {rows[1][2] / rows[0][2]:.2f}x the trials per hour")
    if args.final:
        print(f"whole `tune --trials {args.trials}` ({args.heads}), 1 worker: {whole:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

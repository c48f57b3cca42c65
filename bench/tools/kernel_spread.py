"""How far training noise moves a cell: the same cell under torch's CPU kernel paths and under seeds,
for the old protocol (one learning rate, 600 steps, no validation) and the current default.

    python -m bench.tools.kernel_spread                    # cosine, kme_proto, proto_cosine; ~5 min on 2 cores
    python -m bench.tools.kernel_spread --heads kme_proto --out spread.md

Each run is a subprocess with ATEN_CPU_CAPABILITY set (``native``: unset, the machine's best), so only
the kernels' rounding differs between the columns of one row; the seed columns vary initialisation and
data order on the native path. The spread is what a verdict or a regression gate must cover.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from bench.core import atomic, environment

ROOT = Path(__file__).resolve().parents[2]
OLD = {"train": {"lr": 0.002, "steps": 600, "patience": 0, "eval_points": 10}}
PROTOCOLS = {"old (lr 0.002, 600 steps)": OLD, "default (converging)": {}}
PATHS = ("avx2", "default", "native")


def one(heads: str, cfg: dict, capability: str, seed: int, work: Path) -> dict[str, float]:
    """``head -> infonce_excess`` of one run in a subprocess under ``capability``."""
    out = Path(tempfile.mkdtemp(dir=work))
    path = out / "cfg.yaml"
    path.write_text(yaml.safe_dump({**cfg, "seed": seed}))
    env = environment.child_env(OMP_NUM_THREADS="1")
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    cmd = [
        sys.executable,
        str(ROOT / "run_bench.py"),
        "--heads",
        heads,
        "--config",
        str(path),
        "--out",
        str(out),
        "--no-progress",
        "--quiet",
        "--resamples",
        "0",
    ]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    got = {}
    for f in (out / "runs" / "synthetic").glob("*.json"):
        d = json.loads(f.read_text())
        if d["head"]["kind"] == "head" and d["status"] == "ok":
            got[d["head"]["name"]] = d["metrics"]["infonce_excess"]
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", default="cosine,kme_proto,proto_cosine")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in PROTOCOLS.items():
            by_path = {p: one(args.heads, cfg, p, 0, Path(tmp)) for p in PATHS}
            by_seed = {
                s: (by_path["native"] if s == 0 else one(args.heads, cfg, "native", s, Path(tmp)))
                for s in range(args.seeds)
            }
            for head in args.heads.split(","):
                paths = [by_path[p].get(head) for p in PATHS]
                seeds = [by_seed[s].get(head) for s in range(args.seeds)]
                rows.append(
                    {
                        "protocol": name,
                        "head": head,
                        **{f"{p} (seed 0)": v for p, v in zip(PATHS, paths)},
                        "spread across paths": max(paths) - min(paths),
                        **{f"seed {s}": v for s, v in enumerate(seeds)},
                        "spread across seeds": max(seeds) - min(seeds),
                    }
                )
    table = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f")
    print(table)
    if args.out:
        atomic.write_text(args.out, table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

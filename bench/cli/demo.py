"""``run_bench.py demo``: the real-data path end to end, in about a minute, on generated data.

It writes a tiny MSCOCO and Flickr30k in clip_benchmark's layouts (random pixels, numbered captions) and a
random-weight open_clip model config under ``OUT/data``, then runs the retrieval suite on them exactly as
``run_bench.py --suite retrieval --backbone ... --data-root ...`` would: validation, feature extraction and
its cache, training every chosen head, scoring, result files, leaderboard. The numbers mean nothing (the
backbone is random); that the path works before downloading 20 GB is the point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli import run
from bench.cli.common import DEFAULT_OUT, add_output_flags, log

DEMO_HEADS = "clip_frozen,cosine,kme_rbf,wpse"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=f"{DEFAULT_OUT}/demo", help=f"the demo's folder (default: {DEFAULT_OUT}/demo)")
    p.add_argument("--heads", default=DEMO_HEADS, help=f"comma-separated heads (default: {DEMO_HEADS})")
    p.add_argument("--force", action="store_true", help="recompute cells whose results already exist")
    add_output_flags(p)


def make_data(root: Path) -> tuple[Path, Path]:
    """The datasets, the backbone config and a small protocol under ``root`` (kept if already there)."""
    import torch

    from bench.data import fixtures

    root.mkdir(parents=True, exist_ok=True)
    if not (root / "mscoco_captions").exists():
        g = torch.Generator().manual_seed(0)
        fixtures.make_coco(root, n_images=12, per=5, split="test", g=g)
        fixtures.make_coco(root, n_images=48, per=5, split="train", g=g)
        fixtures.make_flickr(root, n_images=8, per=5, g=g)
    backbone = root / "tiny-random-clip.json"
    backbone.write_text(json.dumps(fixtures.TINY_BACKBONE))
    config = root / "demo.yaml"
    config.write_text(
        "train: {steps: 60, batch_size: 32, warmup_steps: 5}\n"
        "heads: {wpse: {num_features: 64}}\n"
        f"suites: {{retrieval: {{layers: 2, workers: 0, batch_size: 16, cache_dir: '{root / 'cache'}'}}}}\n"
    )
    return backbone, config


def command(args) -> int:
    out = Path(args.out)
    backbone, config = make_data(out / "data")
    log.info(f"demo data, backbone config and protocol written under {out / 'data'}/")
    argv = [
        "--suite",
        "retrieval",
        "--backbone",
        str(backbone),
        "--data-root",
        str(out / "data"),
        "--config",
        str(config),
        "--heads",
        args.heads,
        "--out",
        str(out / "run"),
        "--resamples",
        "1000",
    ]
    argv += [flag for flag, on in (("--force", args.force), ("--no-progress", args.no_progress)) if on]
    run_args = run.parser().parse_args(argv)
    run_args.quiet, run_args.verbose = args.quiet, args.verbose
    return run.command(run_args)

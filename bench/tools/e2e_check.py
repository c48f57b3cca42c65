"""End-to-end check of the retrieval suite on generated data, with throughput figures.

    python -m bench.tools.e2e_check                      # ViT-B-32, random weights, 2,000 images (meant for a GPU)
    python -m bench.tools.e2e_check --images 40 --backbone tiny.json --steps 5   # a CPU smoke run

Writes COCO- and Flickr-layout data into a temporary folder, runs ``run_bench.py --suite retrieval``
on it with every head, and reports backbone feature extraction in images/s (timed on its own,
outside the cache) and each head's training throughput in pairs/s. Random weights: the scores mean
nothing, the speeds do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench.core import atomic
from bench.data.fixtures import make_coco, make_flickr


def make_data(root: Path, n_images: int, per: int = 5, seed: int = 0) -> None:
    """COCO train and test sets and a Flickr30k test set of random images."""
    g = torch.Generator().manual_seed(seed)
    for split in ("train", "test"):
        make_coco(root, n_images, per, split, g)
    make_flickr(root, max(10, n_images // 5), per, g)


def main(argv=None) -> int:
    from bench.cli import main as bench_main
    from bench.features import extract
    from bench.features.backbone import Backbone, BackboneSpec
    from bench.report import provenance
    from bench.report.results import load_all

    p = argparse.ArgumentParser(prog="python -m bench.tools.e2e_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--backbone", default="ViT-B-32")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = provenance.resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_data(root, args.images)
        print(f"generated data in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        bb = Backbone(BackboneSpec.parse(args.backbone), args.layers, device, 0)
        paths = sorted((root / "mscoco_captions" / "val2014").glob("*.jpg"))
        for _ in extract.image_batches(bb, paths[:256], batch_size=256, workers=args.workers, progress=False):
            pass  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = sum(
            len(b) for b, _ in extract.image_batches(bb, paths, batch_size=256, workers=args.workers, progress=False)
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        images_per_s = n / (time.perf_counter() - t0)
        cfg = root / "e2e.yaml"
        cfg.write_text(
            f"train: {{steps: {args.steps}, batch_size: {min(args.batch, args.images * 5)}, warmup_steps: 10}}\n"
            f"suites: {{retrieval: {{layers: {args.layers}, workers: {args.workers}, "
            f"cache_dir: '{root / 'cache'}'}}}}\n"
        )
        out = root / "out"
        status = bench_main(
            [
                "--suite",
                "retrieval",
                "--backbone",
                args.backbone,
                "--data-root",
                str(root),
                "--config",
                str(cfg),
                "--out",
                str(out),
                "--no-progress",
                "--device",
                str(device),
            ]
        )
        rows = [
            {
                "what": f"feature extraction ({args.backbone}, {device.type})",
                "per_second": images_per_s,
                "unit": "images/s",
            }
        ]
        for r in load_all(out):
            if r.head.kind == "head" and r.timing.get("train_pairs_per_second"):
                rows.append(
                    {
                        "what": f"train {r.head.name}",
                        "per_second": r.timing["train_pairs_per_second"],
                        "unit": "pairs/s",
                    }
                )
        print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))
        if args.json:
            atomic.write_json(
                args.json, {"device": provenance.device_description(device), "rows": rows, "status": status}
            )
    return status


if __name__ == "__main__":
    sys.exit(main())

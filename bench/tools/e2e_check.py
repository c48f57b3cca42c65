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
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image


def random_image(path: Path, g: torch.Generator) -> None:
    arr = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr).resize((224, 224)).save(path, quality=90)


def make_flickr(folder: Path, n_images: int, per: int = 5, g: torch.Generator | None = None) -> None:
    """A Flickr30k-layout test set of random images, ``per`` distinct captions each."""
    g = g or torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    for i in range(n_images):
        random_image(folder / f"{i}.jpg", g)
        lines += [f"{i}.jpg,a flickr picture {i} caption {j}" for j in range(per)]
    (folder / "flickr30k_test_karpathy.txt").write_text("\n".join(lines) + "\n")


def make_data(root: Path, n_images: int, per: int = 5, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for split, folder in (("train", "train2014"), ("test", "val2014")):
        d = root / "mscoco_captions" / folder
        d.mkdir(parents=True)
        images, anns = [], []
        for i in range(n_images):
            name = f"COCO_{folder}_{i:012d}.jpg"
            random_image(d / name, g)
            images.append({"id": i, "file_name": name})
            anns += [{"image_id": i, "id": i * per + j, "caption": f"a photo number {i} seen the {j} way"} for j in range(per)]
        (root / "mscoco_captions" / f"coco_{split}_karpathy.json").write_text(json.dumps({"images": images, "annotations": anns}))
    make_flickr(root / "flickr30k", max(10, n_images // 5), per, g)


def main(argv=None) -> int:
    from bench.features import extract
    from bench.report import provenance
    from bench.features.backbone import Backbone, BackboneSpec
    from bench.cli import main as bench_main
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
        for _ in extract.ImageBatches(bb, paths[:256], batch_size=256, workers=args.workers, progress=False):
            pass  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = sum(len(b) for b in extract.ImageBatches(bb, paths, batch_size=256, workers=args.workers, progress=False))
        if device.type == "cuda":
            torch.cuda.synchronize()
        extract = n / (time.perf_counter() - t0)
        cfg = root / "e2e.yaml"
        cfg.write_text(f"train: {{steps: {args.steps}, batch_size: {min(args.batch, args.images * 5)}, warmup_steps: 10}}\n"
                       f"suites: {{retrieval: {{layers: {args.layers}, workers: {args.workers}, cache_dir: '{root / 'cache'}'}}}}\n")
        out = root / "out"
        status = bench_main(["--suite", "retrieval", "--backbone", args.backbone, "--data-root", str(root), "--config", str(cfg),
                             "--out", str(out), "--no-progress", "--device", str(device)])
        rows = [{"what": f"feature extraction ({args.backbone}, {device.type})", "per_second": extract, "unit": "images/s"}]
        for r in load_all(out):
            if r["head"]["kind"] == "head" and r["timing"].get("train_pairs_per_second"):
                rows.append({"what": f"train {r['head']['name']}", "per_second": r["timing"]["train_pairs_per_second"],
                             "unit": "pairs/s"})
        print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))
        if args.json:
            Path(args.json).write_text(json.dumps({"device": provenance.device_description(device), "rows": rows,
                                                   "status": status}, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())

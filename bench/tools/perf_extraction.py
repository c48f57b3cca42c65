"""Feature extraction speed against clip_benchmark's evaluation loop, measured side by side.

    python -m bench.tools.perf_extraction                         # ViT-B-32 (random weights), 1,000 images, batch 256
    python -m bench.tools.perf_extraction --backbone tiny.json --images 64 --batch 16   # a smoke run

Both sides read the same Flickr-layout folder through DataLoaders with the same backbone, batch size
and workers: clip_benchmark's ``zeroshot_retrieval.evaluate`` (images and their captions, one
embedding each), and simbench's extraction (``image_batches`` + ``text_batches``: L points each).
The runs alternate and each side keeps its best time, so a warm cache or a noisy neighbour favours
neither. ``time_clip_benchmark_over_ours`` > 1 means simbench is faster.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.data.fixtures import make_flickr


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backbone, folder: Path, batch: int, workers: int, rounds: int = 2) -> dict:
    from clip_benchmark.datasets.builder import get_dataset_collate_fn
    from clip_benchmark.datasets.flickr import Flickr
    from clip_benchmark.metrics import zeroshot_retrieval

    from bench.data import retrieval_data
    from bench.features import extract

    ds = retrieval_data.read_flickr(folder, "test")
    device = backbone.device
    per_image = len(ds.captions) // len(ds.image_paths)

    def theirs():
        data = Flickr(str(folder), str(folder / "flickr30k_test_karpathy.txt"), transform=backbone.preprocess)
        loader = torch.utils.data.DataLoader(
            data, batch_size=batch, num_workers=workers, collate_fn=get_dataset_collate_fn("flickr30k")
        )
        zeroshot_retrieval.evaluate(
            backbone.model, loader, backbone.tokenizer, device.type, amp=device.type == "cuda", recall_k_list=[1]
        )

    def ours():
        for _ in extract.image_batches(backbone, ds.image_paths, batch_size=batch, workers=workers, progress=False):
            pass
        for _ in extract.text_batches(backbone, ds.captions, batch_size=batch * per_image, progress=False):
            pass

    best = {"clip_benchmark": float("inf"), "simbench": float("inf")}
    with torch.no_grad():
        for _ in range(rounds):
            for name, fn in (("clip_benchmark", theirs), ("simbench", ours)):
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                best[name] = min(best[name], time.perf_counter() - start)
    n = len(ds.image_paths)
    return {
        "images": n,
        "captions": len(ds.captions),
        "batch": batch,
        "workers": workers,
        "clip_benchmark_seconds": best["clip_benchmark"],
        "simbench_seconds": best["simbench"],
        "clip_benchmark_images_per_s": n / best["clip_benchmark"],
        "simbench_images_per_s": n / best["simbench"],
        "time_clip_benchmark_over_ours": best["clip_benchmark"] / best["simbench"],
    }


def main(argv=None) -> int:
    from bench.core import atomic
    from bench.features.backbone import Backbone, BackboneSpec
    from bench.report import provenance

    p = argparse.ArgumentParser(prog="python -m bench.tools.perf_extraction", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="ViT-B-32")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="alternating runs per side; each keeps its best")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = provenance.resolve_device(args.device)
    backbone = Backbone(BackboneSpec.parse(args.backbone), args.layers, device, 0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_flickr(Path(tmp), args.images, g=torch.Generator().manual_seed(0))
        row = measure(backbone, folder, args.batch, args.workers, args.rounds)
    record = {
        "created_utc": provenance.utc_now(),
        **provenance.code_version(),
        "backbone": args.backbone,
        "layers": args.layers,
        "device": provenance.device_description(device),
        "libraries": provenance.library_versions(),
        **row,
    }
    print(
        f"{row['images']} images + {row['captions']} captions, batch {row['batch']}, {device.type}: "
        f"clip_benchmark {row['clip_benchmark_images_per_s']:.1f} images/s, simbench "
        f"{row['simbench_images_per_s']:.1f} images/s; "
        f"time_clip_benchmark_over_ours = {row['time_clip_benchmark_over_ours']:.3f}"
    )
    if args.json:
        atomic.write_json(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())

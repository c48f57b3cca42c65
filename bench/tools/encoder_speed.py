"""What adapting encoders costs: ``python -m bench.tools.encoder_speed``.

Builds a full-size backbone with random weights (time and bytes do not depend on the weights), caches
the prefix of generated images and COCO-style captions through the real feature cache, and times the
real training loop (bench/run/train.py) at batch 256 for ``frozen``, ``last_blocks:1`` and
``last_blocks:2`` with a cosine head: seconds per step, and peak memory. Each mode runs in a process of
its own, so each peak is its own (resident memory on a CPU, allocated memory on a GPU). Prints the
prefix's bytes per image and per caption and their extrapolation to COCO's Karpathy train split.
Times are for comparing modes within one run: they move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch

from bench.tools.token_storage import KARPATHY_TRAIN, SAMPLE_CAPTIONS

MODES = ("frozen", "last_blocks:1", "last_blocks:2")


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(n):
        arr = (torch.rand(224, 224, 3, generator=g) * 255).to(torch.uint8).numpy()
        paths.append(folder / f"{i:05d}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def measure(mode: str, backbone: str, batch: int, steps: int, device: str, layers: int) -> dict:
    """One mode, in this process: (prefix sizes,) seconds per training step and peak memory."""
    import heads as head_registry
    from bench.features import adapt, extract
    from bench.features.backbone import Backbone, BackboneSpec
    from bench.features.cache import FeatureCache
    from bench.run import config
    from bench.run.train import train_head
    from suites.base import PointSets

    device = torch.device(device)
    spec = adapt.EncoderSpec.parse(mode)
    captions = (SAMPLE_CAPTIONS * (batch // len(SAMPLE_CAPTIONS) + 1))[:batch]
    out = {"mode": mode}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = _images(tmp, batch)
        bb = Backbone(BackboneSpec.parse(backbone), layers=layers, device=device, seed=0)
        cache = FeatureCache(tmp / "cache")
        kw = {"batch_size": 64, "progress": False}
        if spec.frozen:
            images = extract.image_points(cache, bb, "bench", "train", paths, workers=0, **kw).points
            texts = extract.text_points(cache, bb, "bench", "train", captions, **kw).points
            encoder = None
        else:
            slot = adapt.EncoderSlot(adapt.Adapter(bb, spec))
            images = extract.image_prefix_sets(cache, slot, "bench", "train", paths, "layers", workers=0, **kw).points
            texts = extract.text_prefix_sets(cache, slot, "bench", "train", captions, "layers", **kw).points

            def stored(sets) -> int:
                return sum(f.stat().st_size for f in sets.prefix.folder.iterdir() if f.name != "manifest.json")

            out["bytes_per_image"] = stored(images) / batch
            out["bytes_per_caption"] = stored(texts) / batch
            out["tokens_per_caption"] = (texts.prefix.total_tokens / batch) - texts.slot.towers.text.frozen_points(
                "layers"
            )
            encoder = slot.bind(device)
        del bb
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        data = PointSets(images, texts)
        train = {**config.TRAIN_DEFAULTS, "steps": steps, "batch_size": batch, "eval_points": 0, "patience": 0}
        train.update({} if spec.frozen else {"encoder": mode, "encoder_lr": config.ENCODER_DEFAULTS["encoder_lr"]})
        head = head_registry.get_head("cosine")(images.shape[-1], texts.shape[-1]).to(device)
        train_head(head, data, {**train, "steps": 1}, 0, device, progress=False, encoder=encoder)  # warm-up, not timed
        stats = train_head(head, data, train, 0, device, progress=False, encoder=encoder)
        per_step = stats.seconds / steps
        out.update(seconds_per_step=round(per_step, 4), peak_memory_mb=round(_peak_mb(device), 1))
    return out


def _child(queue, *args) -> None:
    queue.put(measure(*args))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="open_clip model name (built with random weights)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--layers", type=int, default=4, help="points per input of the layers readout")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for mode in args.modes.split(","):
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_child, args=(queue, mode, args.backbone, args.batch, args.steps, args.device, args.layers)
        )
        t0 = time.perf_counter()
        proc.start()
        rows.append(queue.get())
        proc.join()
        rows[-1]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(rows[-1]))
    figures = {"backbone": args.backbone, "batch": args.batch, "device": args.device, "modes": rows}
    frozen = next((r for r in rows if r["mode"] == "frozen"), None)
    for r in rows:
        if frozen and r is not frozen and frozen["seconds_per_step"] > 0:
            figures[f"time_{r['mode'].replace(':', '_')}_over_frozen"] = round(
                r["seconds_per_step"] / frozen["seconds_per_step"], 1
            )
        if "bytes_per_image" in r:
            figures[f"coco_karpathy_train_gb_{r['mode'].replace(':', '_')}"] = round(
                (r["bytes_per_image"] * KARPATHY_TRAIN["images"] + r["bytes_per_caption"] * KARPATHY_TRAIN["captions"])
                / 1e9,
                2,
            )
    print(json.dumps({k: v for k, v in figures.items() if k != "modes"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

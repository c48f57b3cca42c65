"""Measure what the tokens readout costs on disk and in RAM: ``python -m bench.tools.token_storage``.

Builds the backbone with random weights (token counts and bytes do not depend on the weights, and
nothing can be downloaded here), extracts token sets for generated images and the captions given
(default: COCO-style captions below), through the real feature cache, then reads them back a batch
at a time. Prints bytes per image and per caption, the extrapolation to COCO's Karpathy train split,
and the peak resident memory of each phase.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

# Written in the style of COCO captions (COCO's mean is about 10.5 words); pass --captions for real ones.
SAMPLE_CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing with a frisbee in a grassy park.",
    "A plate of food with broccoli, rice and chicken.",
    "A red double decker bus driving down a city street.",
    "A woman holding an umbrella while walking in the rain.",
    "A cat sleeping on the hood of a parked car.",
    "A group of people standing around a kitchen counter.",
    "A giraffe eating leaves from the top of a tree.",
    "A small child brushing his teeth in the bathroom.",
    "An airplane flying over a large body of water.",
    "A bowl of fruit sitting on a wooden table next to a window.",
    "A baseball player swinging a bat at a ball.",
    "A train traveling down tracks next to a forest.",
    "A living room with a couch, a television and a lamp.",
    "A man in a suit and tie standing in front of a building.",
    "A bunch of bananas hanging from a hook.",
    "A street sign on the corner of two roads.",
    "Several boats docked at a pier on a sunny day.",
    "A person on skis going down a snowy slope.",
    "A pizza with cheese and pepperoni on a pan.",
]
KARPATHY_TRAIN = {"images": 113_287, "captions": 566_747}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score_times(images, texts, n_images: int, n_captions: int) -> dict:
    """Seconds to encode and score an n_images x n_captions test set with each head, side by side in one
    process, on sets tiled from the extracted ones (shapes and lengths are what matter for time)."""
    import heads as head_registry
    from bench.eval.scoring import encode, score_matrices

    img_rows = torch.arange(n_images) % len(images)
    txt_rows = torch.arange(n_captions) % len(texts)
    ip, im = images.rows(img_rows)
    tp, tm = texts.rows(txt_rows)
    dim = ip.shape[-1]
    out = {}
    for name in ("cosine", "meru", "pcmepp", "wpse", "smooth_chamfer", "flair", "filip"):
        head = head_registry.get_head(name)(dim, dim).eval()
        t0 = time.perf_counter()
        ri = encode(head, "image", ip, im, "cpu")
        rt = encode(head, "text", tp, tm, "cpu")
        score_matrices(head, ri, rt, n_images, n_captions)
        out[name] = round(time.perf_counter() - t0, 2)
    out["size"] = f"{n_images} images x {n_captions} captions"
    return out


def main(argv=None) -> int:
    from PIL import Image

    from bench.features import extract
    from bench.features.backbone import Backbone, BackboneSpec
    from bench.features.cache import FeatureCache

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="open_clip model name (built with random weights)")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--captions", default=None, help="a text file, one caption per line")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--score-images", type=int, default=500)
    p.add_argument("--score-captions", type=int, default=2500)
    args = p.parse_args(argv)
    captions = Path(args.captions).read_text().splitlines() if args.captions else SAMPLE_CAPTIONS
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = torch.Generator().manual_seed(0)
        paths = []
        for i in range(args.images):
            arr = (torch.rand(224, 224, 3, generator=g) * 255).to(torch.uint8).numpy()
            paths.append(tmp / f"{i:05d}.png")
            Image.fromarray(arr).save(paths[-1])
        bb = Backbone(BackboneSpec.parse(args.backbone), layers=1, seed=0)
        cache = FeatureCache(tmp / "cache")
        base = peak_rss_mb()
        t0 = time.perf_counter()
        images = extract.image_token_sets(cache, bb, "probe", "train", paths, batch_size=32, workers=0, progress=False)
        texts = extract.text_token_sets(cache, bb, "probe", "train", captions, progress=False)
        extract_s = time.perf_counter() - t0
        after_extract = peak_rss_mb()

        def stored(sets) -> int:
            return sum(f.stat().st_size for f in sets.points.folder.iterdir() if f.name != "manifest.json")

        for start in range(0, len(images.points), 16):  # read back as training does, a batch at a time
            images.points.rows(torch.arange(start, min(start + 16, len(images.points))))
        per_image, per_caption = stored(images) / len(paths), stored(texts) / len(captions)
        tokens_per_caption = texts.points.total_tokens / len(captions)
        figures = {
            "backbone": args.backbone,
            "images": len(paths),
            "captions": len(captions),
            "tokens_per_image": images.points.total_tokens / len(paths),
            "tokens_per_caption": tokens_per_caption,
            "bytes_per_image": per_image,
            "bytes_per_caption": per_caption,
            "coco_karpathy_train_gb": (per_image * KARPATHY_TRAIN["images"] + per_caption * KARPATHY_TRAIN["captions"])
            / 1e9,
            "coco_padded_to_context_gb": (
                per_image * KARPATHY_TRAIN["images"] + 77 * bb.embed_dim * 2 * KARPATHY_TRAIN["captions"]
            )
            / 1e9,
            "extract_seconds": round(extract_s, 1),
            "peak_rss_mb_before": round(base),
            "peak_rss_mb_after_extract_and_read": round(after_extract),
        }
        figures["score_seconds"] = score_times(images.points, texts.points, args.score_images, args.score_captions)
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

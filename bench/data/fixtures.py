"""Small datasets in the real on-disk layouts (clip_benchmark's), made on the spot.

The tests, ``e2e_check`` and ``perf_extraction`` share them, so what the benchmarks run on is what
the tests have checked the readers against. Without a generator the images are flat colours (fast
to write and decode); with one they are random pixels, so a backbone gives them distinct features.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image


def random_image(path: Path, g: torch.Generator) -> None:
    arr = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr).resize((224, 224)).save(path, quality=90)


def _image(path: Path, i: int, g: torch.Generator | None) -> None:
    if g is None:
        Image.new("RGB", (32, 24), color=(30 * i % 256, 60, 90)).save(path)
    else:
        random_image(path, g)


def make_coco(
    root: Path, n_images: int = 4, per: int = 5, split: str = "test", g: torch.Generator | None = None
) -> None:
    """``root/mscoco_captions``: val2014/ (test) or train2014/ (train) and coco_SPLIT_karpathy.json.
    Image ids start at 100 and caption ids at 1000, so nothing can confuse an id with a position."""
    folder_name = "train2014" if split == "train" else "val2014"
    folder = root / "mscoco_captions" / folder_name
    folder.mkdir(parents=True)
    images, anns = [], []
    for i in range(n_images):
        name = f"COCO_{folder_name}_{i:012d}.jpg"
        _image(folder / name, i, g)
        images.append({"id": 100 + i, "file_name": name})
        anns += [
            {"image_id": 100 + i, "id": 1000 + i * per + j, "caption": f"image {i} caption {j}"} for j in range(per)
        ]
    (root / "mscoco_captions" / f"coco_{split}_karpathy.json").write_text(
        json.dumps({"images": images, "annotations": anns})
    )


def make_flickr(root: Path, n_images: int = 3, per: int = 5, g: torch.Generator | None = None) -> Path:
    """``root/flickr30k``: images and flickr30k_test_karpathy.txt, whose captions hold unquoted commas
    (the reader splits at the first one, as clip_benchmark does) and are all distinct (no tied scores).
    Returns the folder."""
    folder = root / "flickr30k"
    folder.mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(n_images):
        _image(folder / f"{1000 + i}.jpg", i, g)
        lines += [f"{1000 + i}.jpg,a caption of {i}, with a comma {j}" for j in range(per)]
    (folder / "flickr30k_test_karpathy.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_cifar10(root: Path, n_train: int = 60, n_test: int = 30, g: torch.Generator | None = None) -> Path:
    """``root/cifar10/cifar-10-batches-py``: the python pickles torchvision's CIFAR10 reads (5 train batches,
    one test batch, batches.meta). Each class gets its own mean colour plus noise, so a probe can learn it."""
    import pickle

    import numpy as np

    g = g or torch.Generator().manual_seed(0)
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    colours = torch.rand(10, 3, generator=torch.Generator().manual_seed(123)) * 200

    def batch(n: int, offset: int) -> dict:
        labels = [(offset + i) % 10 for i in range(n)]
        noise = torch.rand(n, 3, 32, 32, generator=g) * 55
        data = (colours[labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8).reshape(n, -1).numpy()
        return {"data": np.ascontiguousarray(data), "labels": labels, "batch_label": "fixture"}

    per = n_train // 5
    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as fh:
            pickle.dump(batch(per, i * per), fh)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump(batch(n_test, 3), fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)]}, fh)
    return folder


# A tiny open_clip model config (random weights): what the tests and the demo run the real-data path on.
TINY_BACKBONE = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
}


def make_sugarcrepe(root: Path, per_task: int = 6, g: torch.Generator | None = None) -> Path:
    """``root/sugar_crepe``: val2017/ and every task's JSON in SugarCrepe's format (non-contiguous ids,
    as the real files have). Returns the folder."""
    folder = root / "sugar_crepe"
    (folder / "val2017").mkdir(parents=True)
    for i in range(per_task):
        _image(folder / "val2017" / f"{i:012d}.jpg", i, g)
    for t, task in enumerate(
        ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
    ):
        ann = {
            str(3 * i + t): {
                "filename": f"{i:012d}.jpg",
                "caption": _words(7 * i + t, 4),
                "negative_caption": _words(7 * i + t + 3, 5),
            }
            for i in range(per_task)
        }
        (folder / f"{task}.json").write_text(json.dumps(ann))
    return folder


def make_winoground(root: Path, n: int = 5, g: torch.Generator | None = None) -> Path:
    """``root/winoground``: examples.jsonl and images/ex_{id}_img_{0,1}.png. Returns the folder."""
    folder = root / "winoground"
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        for j in (0, 1):
            _image(folder / "images" / f"ex_{i}_img_{j}.png", 2 * i + j, g)
        lines.append(json.dumps({"id": i, "caption_0": _words(11 * i, 4), "caption_1": _words(11 * i + 5, 4)}))
    (folder / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return folder


WORDS = ("dog", "red", "under", "tree", "two", "blue", "car", "on", "man", "small", "grass", "holding", "cat", "sky")


def _words(seed: int, n: int) -> str:
    """A caption of ``n`` words drawn by ``seed``: different captions score differently under a random model."""
    return " ".join(WORDS[(seed * 5 + 3 * k * k + k) % len(WORDS)] for k in range(n))


def make_aro(root: Path, g: torch.Generator | None = None) -> Path:
    """``root/aro``: ARO's visual_genome_relation.json and visual_genome_attribution.json (lists of entries
    with a box) and images/ of 48x40 images. VG-Relation has a symmetric relation ("next to") beside two
    others; VG-Attribution one attribute pair with 26 cases and one with 4, so both of ARO's macro filters
    have something to leave out. Returns the folder."""
    folder = root / "aro"
    (folder / "images").mkdir(parents=True)
    g = g or torch.Generator().manual_seed(7)
    for i in range(6):
        arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / "images" / f"{2300000 + i}.jpg")

    def entry(k: int, **extra) -> dict:
        x, y = (7 * k) % 20, (5 * k) % 16
        return {
            "image_path": f"{2300000 + k % 6}.jpg",
            "bbox_x": x,
            "bbox_y": y,
            "bbox_w": 20 + k % 9,
            "bbox_h": 16 + k % 7,
            "true_caption": _words(11 * k + 1, 5),
            "false_caption": _words(11 * k + 6, 5),
            **extra,
        }

    relations = ["on", "holding", "next to"]
    (folder / "visual_genome_relation.json").write_text(
        json.dumps([entry(k, relation_name=relations[k % 3]) for k in range(12)])
    )
    pairs = [["red", "wooden"]] * 26 + [["small", "white"]] * 4
    (folder / "visual_genome_attribution.json").write_text(
        json.dumps([entry(k, attributes=p) for k, p in enumerate(pairs)])
    )
    return folder

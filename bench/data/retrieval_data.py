"""Image-caption datasets in clip_benchmark's on-disk layouts, validated before any work.

clip_benchmark's builder downloads what is missing and, offline, leaves empty files behind; so the
layout is checked here first, and a missing or partial dataset fails with the exact layout expected
and where to get it, writing nothing into the data root. The files are read directly in the same
formats clip_benchmark reads (COCO-style Karpathy JSON; Flickr ``image.jpg,caption`` text), which
avoids a pycocotools dependency and lets a reader name every missing image.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import DataError
from bench.data.types import RetrievalSet  # noqa: F401 (defined there, read from here by the suites)
from bench.data.webdataset import clip_benchmark_shards, wds_samples


def _check_images(paths: list[Path], dataset: str, limit: int = 5) -> None:
    missing = [p for p in paths if not p.is_file()]
    empty = [p for p in paths if p.is_file() and p.stat().st_size == 0]
    if missing or empty:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(str(p) for p in missing[:limit])})")
        if empty:
            parts.append(
                f"{len(empty)} empty (e.g. {', '.join(str(p) for p in empty[:limit])}; "
                f"an interrupted download leaves these: delete and fetch them again)"
            )
        raise DataError(
            f"{dataset}: of {len(paths)} images, " + "; ".join(parts) + ". Restore them, or remove their "
            "entries from the annotation file so the test set is what it says it is."
        )


def _require(path: Path, dataset: str, layout: str) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        state = "is empty" if path.is_file() else "is missing"
        raise DataError(f"{dataset}: {path} {state}. Expected layout:\n{layout}")


def read_coco(root: Path, split: str) -> RetrievalSet:
    folder = root / ("train2014" if split == "train" else "val2014")
    ann = root / f"coco_{split}_karpathy.json"
    _require(ann, "mscoco_captions", DATASETS["mscoco_captions"].layout)
    try:
        data = json.loads(ann.read_text(encoding="utf-8"))
        images = {img["id"]: img["file_name"] for img in data["images"]}
        anns = [(a["image_id"], a["caption"]) for a in data["annotations"]]
    except UnicodeDecodeError as exc:
        raise DataError(f"mscoco_captions: {ann} is not UTF-8 text ({exc}); re-save it as UTF-8.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(
            f"mscoco_captions: {ann} is not a COCO-style caption file ({type(exc).__name__}: {exc})."
        ) from None
    order = sorted(images)
    index = {image_id: i for i, image_id in enumerate(order)}
    captions, caption_image = [], []
    for image_id, caption in anns:
        if image_id not in index:
            raise DataError(f"mscoco_captions: {ann} has a caption for unknown image id {image_id}.")
        if not isinstance(caption, str):
            raise DataError(
                f"mscoco_captions: {ann} has a caption that is {json.dumps(caption)}, not text, for image id "
                f"{image_id}; fix or remove that annotation."
            )
        if not caption.strip():
            raise DataError(f"mscoco_captions: {ann} has an empty caption for image id {image_id}.")
        captions.append(str(caption).strip())
        caption_image.append(index[image_id])
    paths = [folder / Path(images[i]).name for i in order]
    _check_images(paths, "mscoco_captions")
    return RetrievalSet("mscoco_captions", split, paths, captions, caption_image)


def read_flickr(root: Path, split: str) -> RetrievalSet:
    ann = root / f"flickr30k_{split}_karpathy.txt"
    _require(ann, "flickr30k", DATASETS["flickr30k"].layout)
    images: dict[str, int] = {}
    captions, caption_image = [], []
    try:
        lines = ann.read_text(encoding="utf-8").splitlines()[1:]  # header line, as clip_benchmark skips it
    except UnicodeDecodeError as exc:
        raise DataError(f"flickr30k: {ann} is not UTF-8 text ({exc}); re-save it as UTF-8.") from None
    for n, line in enumerate(lines, start=2):
        line = line.strip()
        if not line:
            continue
        if ".jpg," not in line:
            raise DataError(f"flickr30k: {ann} line {n} is not 'image.jpg,caption': {line[:80]!r}.")
        name, caption = line.split(".jpg,", 1)
        if not caption.strip():
            raise DataError(f"flickr30k: {ann} line {n} has an empty caption.")
        idx = images.setdefault(name + ".jpg", len(images))
        captions.append(caption.strip())
        caption_image.append(idx)
    paths = [root / name for name in images]
    _check_images(paths, "flickr30k")
    return RetrievalSet("flickr30k", split, paths, captions, caption_image)


@dataclass
class DatasetInfo:
    reader: Callable[[Path, str], RetrievalSet]
    layout: str
    source: str


DATASETS = {
    "mscoco_captions": DatasetInfo(
        read_coco,
        "  DATA_ROOT/mscoco_captions/coco_test_karpathy.json   (COCO-style: images[id, file_name], annotations[image_id, caption])\n"
        "  DATA_ROOT/mscoco_captions/val2014/COCO_val2014_*.jpg (train split: coco_train_karpathy.json + train2014/)\n"
        "  or clip_benchmark's webdataset export: DATA_ROOT/mscoco_captions/test/nshards.txt + test/0.tar ...",
        "images: cocodataset.org val2014.zip / train2014.zip; Karpathy annotations: mehdidc/retrieval_annotations release 1.0.0",
    ),
    "flickr30k": DatasetInfo(
        read_flickr,
        "  DATA_ROOT/flickr30k/flickr30k_test_karpathy.txt (header line, then 'NAME.jpg,caption' lines)\n"
        "  DATA_ROOT/flickr30k/NAME.jpg                     (all images in one flat folder)\n"
        "  or clip_benchmark's webdataset export: DATA_ROOT/flickr30k/test/nshards.txt + test/0.tar ...",
        "images: the Flickr30k dataset (e.g. Kaggle 'flickr30k'); annotations: mehdidc/retrieval_annotations release 1.0.0",
    ),
}


def read_csv(
    path: Path, separator: str = "\t", image_column: str = "filepath", caption_column: str = "title"
) -> RetrievalSet:
    """open_clip's training CSV: one row per (image path, caption); relative paths are from the CSV's folder."""
    import pandas as pd

    if not path.is_file():
        raise DataError(
            f"training CSV {path} does not exist (expected columns {image_column!r} and {caption_column!r}, "
            f"separated by {separator!r}, as open_clip's --csv-img-key/--csv-caption-key)."
        )
    try:
        frame = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"training CSV {path} cannot be parsed: {exc}") from None
    missing = [c for c in (image_column, caption_column) if c not in frame.columns]
    if missing:
        raise DataError(f"training CSV {path} lacks column(s) {missing}; it has {list(frame.columns)}.")
    empty = frame.index[frame[caption_column].str.strip() == ""].tolist()
    if empty:
        raise DataError(f"training CSV {path}: {len(empty)} empty caption(s), first at data row {empty[0] + 1}.")
    images: dict[str, int] = {}
    caption_image = [images.setdefault(p, len(images)) for p in frame[image_column]]
    paths = [Path(p) if Path(p).is_absolute() else path.parent / p for p in images]
    _check_images(paths, f"training CSV {path.name}")
    return RetrievalSet(f"csv:{path.name}", "train", paths, [c.strip() for c in frame[caption_column]], caption_image)


def pairs_from_shards(name: str, split: str, shards: list[Path]) -> RetrievalSet:
    """Image-caption pairs from webdataset shards: ``txt`` holds one caption per line."""
    paths, captions, caption_image = [], [], []
    for path, texts in wds_samples(shards, ("txt",)):
        lines = [c.strip() for c in texts["txt"].splitlines() if c.strip()]  # several captions per image
        if not lines:
            raise DataError(f"webdataset: {path} has no caption.")
        caption_image += [len(paths)] * len(lines)
        captions += lines
        paths.append(path)
    return RetrievalSet(name, split, paths, captions, caption_image)


def read_webdataset(pattern: str) -> RetrievalSet:
    """Training shards given by a brace pattern (``/path/train-{000..009}.tar``)."""
    from braceexpand import braceexpand

    return pairs_from_shards(f"wds:{Path(pattern).name}", "train", [Path(p).expanduser() for p in braceexpand(pattern)])


def load(
    data_root: Path, name: str, split: str, source: str | None = None, columns: dict | None = None
) -> RetrievalSet:
    """A dataset by name under ``data_root``; or ``csv:PATH`` / ``wds:SHARDS`` as open_clip's trainer reads them;
    or a Hugging Face dataset, ``hf:PATH_OR_NAME[:SPLIT]``, as the name (training pairs) or as the ``source``
    of a named test set (which keeps its name, so its metrics keep theirs)."""
    from bench.data import hf_source

    columns = columns or {}
    if hf_source.is_hf(source or name):
        return hf_source.retrieval_set(
            source or name, name, split, columns.get("image_column", "auto"), columns.get("caption_column", "auto")
        ).validate()
    if name.startswith("csv:"):
        return read_csv(Path(name[4:]).expanduser()).validate()
    if name.startswith("wds:"):
        return read_webdataset(name[4:]).validate()
    if name not in DATASETS:
        from bench.core.registry import suggest

        raise DataError(f"unknown dataset {name!r}.{suggest(name, DATASETS)} Known: {', '.join(DATASETS)}.")
    root = Path(data_root) / name
    shards = clip_benchmark_shards(root, split) if root.is_dir() else None
    if shards is not None:  # clip_benchmark's webdataset export of the same dataset
        return pairs_from_shards(name, split, shards).validate()
    if not root.is_dir():
        info = DATASETS[name]
        raise DataError(
            f"{name}: folder {root} does not exist. Expected layout:\n{info.layout}\nGet it from: {info.source}"
        )
    return DATASETS[name].reader(root, split).validate()


def check_all(data_root: Path, split: str = "test") -> list[dict]:
    """One row per dataset: ready or not, and for a missing one the layout and where to get it."""
    rows = []
    for name, info in DATASETS.items():
        try:
            ds = load(data_root, name, split)
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "ready": True,
                    "detail": f"{len(ds.image_paths)} images, {len(ds.captions)} captions",
                }
            )
        except DataError as exc:
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "ready": False,
                    "detail": str(exc),
                    "layout": info.layout.strip("\n"),
                    "source": info.source,
                }
            )
    return rows

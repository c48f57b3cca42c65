"""Labelled train and test splits for the linear probe, in CLIP_benchmark's layouts, never downloaded.

A folder is checked before clip_benchmark's builder (torchvision underneath) is called with
``download=False``; what the builder cannot read fails naming the layout expected. Datasets that keep
their images as files (ImageNet, Flowers102, DTD, Pets, FGVC Aircraft) are read by path; those that
keep arrays (CIFAR-10/100, STL10) by row, through an indexed image source that a DataLoader worker can
reopen. clip_benchmark's webdataset export (``NAME/SPLIT/nshards.txt`` + tars with ``cls``) and
Hugging Face datasets (``sources``) work too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core import hashing
from bench.core.errors import DataError
from bench.data import image_source
from bench.data.webdataset import clip_benchmark_shards, labelled_samples

LAYOUTS = {
    "imagenet1k": "DATA_ROOT/imagenet1k/ with ILSVRC2012_devkit_t12.tar.gz, train/<wnid>/*.JPEG and val/ (torchvision ImageNet)",
    "cifar10": "DATA_ROOT/cifar10/cifar-10-batches-py/ with data_batch_1 .. data_batch_5, test_batch, batches.meta",
    "cifar100": "DATA_ROOT/cifar100/cifar-100-python/ with train, test, meta",
    "stl10": "DATA_ROOT/stl10/stl10_binary/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin (torchvision STL10)",
    "flowers": "DATA_ROOT/flowers/flowers-102/ with jpg/, imagelabels.mat, setid.mat (torchvision Flowers102)",
    "dtd": "DATA_ROOT/dtd/dtd/ with images/ and labels/ (torchvision DTD)",
    "pets": "DATA_ROOT/pets/oxford-iiit-pet/ with images/ and annotations/ (torchvision OxfordIIITPet)",
    "fgvc_aircraft": "DATA_ROOT/fgvc_aircraft/fgvc-aircraft-2013b/data/ (torchvision FGVCAircraft)",
}
SOURCE = "clip_benchmark's download scripts, or torchvision's (download=True) on a machine with network access"


@dataclass
class LabelledSet:
    name: str
    split: str
    image_paths: list
    labels: list[int]
    notes: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.name}|{self.split}".encode())
        for p, y in zip(self.image_paths, self.labels):
            h.update(f"{image_source.identity(p)}|{y}\n".encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class TorchvisionRows(image_source.IndexedSource):
    """Images kept as arrays (CIFAR's pickles, torchvision's STL10), read by row."""

    name: str
    root: str
    split: str

    def key(self) -> str:
        return "tv-" + hashing.json_sha256([self.name, self.root, self.split], 16)

    def dataset(self):
        reader = read_cifar if self.name in CIFAR else _build
        return image_source.opened(self, lambda: reader(self.name, Path(self.root), self.split))

    def open_row(self, row: int):
        ds = self.dataset()
        if isinstance(ds, CifarArrays):
            from PIL import Image

            return Image.fromarray(ds.images[int(row)])
        return ds[int(row)][0]

    def stamp(self) -> str:
        files = sorted(p for p in Path(self.root).rglob("*") if p.is_file())
        return "tv:" + ",".join(f"{p.relative_to(self.root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


# CIFAR's python pickles, read here: torchvision's reader insists on the archive's md5 sums, which a copy
# made any other way (or a test's fixture) cannot match, and the format is four keys.
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


@dataclass
class CifarArrays:
    images: object  # uint8 [n, 32, 32, 3]
    labels: list[int]


def read_cifar(name: str, root: Path, split: str) -> CifarArrays:
    import pickle

    import numpy as np

    folder, train_files, test_files, key = CIFAR[name]
    if split not in ("train", "test"):
        raise DataError(f"{name}: split {split!r} does not exist; it has train and test.")
    arrays, labels = [], []
    for f in train_files if split == "train" else test_files:
        path = root / folder / f
        if not path.is_file() or path.stat().st_size == 0:
            raise DataError(
                f"{name}: {path} is {'empty' if path.is_file() else 'missing'}. Expected layout:\n  "
                f"{LAYOUTS[name]}\nGet it from: {SOURCE}"
            )
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += [int(y) for y in batch[key]]
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise DataError(
                f"{name}: {path} is not a CIFAR python batch ({type(exc).__name__}: {exc}); replace it with "
                "an intact copy."
            ) from None
    return CifarArrays(np.concatenate(arrays), labels)


def _build(name: str, root: Path, split: str):
    from clip_benchmark.datasets.builder import build_dataset

    try:
        return build_dataset(name, root=str(root), transform=None, split=split, download=False)
    except Exception as exc:  # noqa: BLE001 (torchvision reports a missing layout in many ways)
        text = str(exc) if len(str(exc)) < 300 else str(exc)[:300] + " ..."
        raise DataError(
            f"{name} ({split} split): clip_benchmark could not read {root} ({type(exc).__name__}: {text}). "
            f"Expected layout:\n  {LAYOUTS[name]}\nGet it from: {SOURCE}"
        ) from None


def _files_and_labels(ds) -> tuple[list, list[int]] | None:
    """The image files and labels a torchvision dataset lists, or None if it keeps arrays."""
    if hasattr(ds, "samples"):
        return [Path(p) for p, _ in ds.samples], [int(y) for _, y in ds.samples]
    for files, labels in (("_image_files", "_labels"), ("_images", "_labels")):
        if hasattr(ds, files) and hasattr(ds, labels):
            return [Path(p) for p in getattr(ds, files)], [int(y) for y in getattr(ds, labels)]
    return None


def _array_labels(ds) -> list[int]:
    for attr in ("targets", "labels"):
        if hasattr(ds, attr):
            return [int(y) for y in getattr(ds, attr)]
    raise DataError(f"{type(ds).__name__}: neither files nor labels found; this dataset is not supported yet.")


def per_class(labels: list[int], k: int, seed: int = 0) -> list[int]:
    """Row indices keeping k samples of each class (all when a class has fewer), chosen by a fixed seed:
    the same subset for every run, so it is test data, not a random choice of the run."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    counts: dict[int, int] = {}
    keep = []
    for i in order:
        if counts.get(labels[i], 0) < k:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
            keep.append(i)
    return sorted(keep)


def load_split(
    data_root: Path, name: str, split: str, source: str | None = None, columns: dict | None = None, per_class_k: int = 0
) -> LabelledSet:
    """One labelled split; ``per_class_k`` > 0 keeps that many images per class (ImageNet's 1.28M train)."""
    if source is not None:
        from bench.data import hf_source

        columns = columns or {}
        refs, labels, _ = hf_source.labelled_images(
            source, split, columns.get("image_column", "auto"), columns.get("label_column", "auto")
        )
        out = LabelledSet(name, split, refs, labels, {"source": source})
    else:
        out = _from_folder(Path(data_root), name, split)
    if per_class_k > 0:
        keep = per_class(out.labels, per_class_k)
        out = LabelledSet(
            out.name,
            out.split,
            [out.image_paths[i] for i in keep],
            [out.labels[i] for i in keep],
            {**out.notes, "per_class": per_class_k},
        )
    if not out.image_paths:
        raise DataError(f"{name} ({split} split) has no images; point the data root at a complete copy.")
    if min(out.labels) < 0:
        raise DataError(f"{name} ({split} split): negative class labels; labels must be class indices 0..C-1.")
    return out


def _from_folder(data_root: Path, name: str, split: str) -> LabelledSet:
    if name not in LAYOUTS:
        from bench.core.registry import suggest

        raise DataError(f"unknown linear-probe dataset {name!r}.{suggest(name, LAYOUTS)} Known: {', '.join(LAYOUTS)}.")
    root = data_root / name
    shards = clip_benchmark_shards(root, split) if root.is_dir() else None
    if shards is not None:  # clip_benchmark's webdataset export
        return LabelledSet(name, split, *labelled_samples(name, shards))
    if not root.is_dir() or not any(root.iterdir()):
        raise DataError(
            f"{name}: folder {root} is missing or empty. Expected layout:\n  {LAYOUTS[name]}\nGet it from: {SOURCE}"
        )
    if name in CIFAR:
        arrays = read_cifar(name, root, split)
        labels, rows = arrays.labels, TorchvisionRows(name, str(root), split)
        image_source.remember(rows, arrays)  # read once in this process
        prefix = image_source.register(rows)
        return LabelledSet(name, split, [f"{prefix}{i}" for i in range(len(labels))], labels)
    ds = _build(name, root, split)
    listed = _files_and_labels(ds)
    if listed is not None:
        paths, labels = listed
        bad = [p for p in paths if not p.is_file() or p.stat().st_size == 0]
        if bad:
            raise DataError(
                f"{name}: {len(bad)} of {len(paths)} images are missing or empty (e.g. "
                f"{', '.join(map(str, bad[:5]))}); an interrupted download leaves these."
            )
        return LabelledSet(name, split, paths, labels)
    prefix = image_source.register(TorchvisionRows(name, str(root), split))
    labels = _array_labels(ds)
    return LabelledSet(name, split, [f"{prefix}{i}" for i in range(len(labels))], labels)


def check_all(data_root: Path) -> list[dict]:
    """One row per dataset: both splits readable, or what is missing."""
    rows = []
    for name in LAYOUTS:
        try:
            train, test = load_split(data_root, name, "train"), load_split(data_root, name, "test")
            rows.append(
                {
                    "dataset": name,
                    "ready": True,
                    "detail": f"{len(train.image_paths)} train, {len(test.image_paths)} test images",
                }
            )
        except DataError as exc:
            rows.append(
                {"dataset": name, "ready": False, "detail": str(exc), "layout": LAYOUTS[name], "source": SOURCE}
            )
    return rows

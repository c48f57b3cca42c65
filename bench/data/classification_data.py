"""Zero-shot classification datasets through clip_benchmark's builder, guarded.

clip_benchmark knows each ImageNet variant's layout, class names (including the 200-class subsets
of ImageNet-R and -A) and prompt templates, so it builds the dataset; but it downloads whatever
is missing (and, offline, leaves empty files behind), so the folder is validated first and the
builder is only called on a dataset that is there. Every image file is then checked for being
present and non-empty, and the list of files is what the feature cache fingerprints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import DataError
from bench.data import image_source
from bench.data.webdataset import clip_benchmark_shards, labelled_samples

LAYOUTS = {
    "imagenet1k": (
        "DATA_ROOT/imagenet1k/ILSVRC2012_devkit_t12.tar.gz + val/ (torchvision ImageNet layout)",
        "image-net.org (ILSVRC2012 validation set and devkit)",
    ),
    "imagenetv2": (
        "DATA_ROOT/imagenetv2/ImageNetV2-matched-frequency/<class index>/*.jpeg (all 10,000)",
        "huggingface vaishaal/ImageNetV2 (matched-frequency)",
    ),
    "imagenet-r": (
        "DATA_ROOT/imagenet-r/<wnid>/*.jpg (200 classes)",
        "people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
    ),
    "imagenet-a": (
        "DATA_ROOT/imagenet-a/<wnid>/*.jpg (200 classes)",
        "people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
    ),
    "imagenet_sketch": (
        "DATA_ROOT/imagenet_sketch/<wnid>/*.JPEG (1000 classes)",
        "ImageNet-Sketch.zip (Google Drive id in clip_benchmark)",
    ),
    "objectnet": (
        "DATA_ROOT/objectnet/objectnet-1.0/... as clip_benchmark unpacks it",
        "objectnet.dev objectnet-1.0.zip",
    ),
}


IMAGENETV2_SIZE = 10_000


@dataclass
class ClassificationSet:
    name: str
    image_paths: list[Path]
    labels: list[int]
    classnames: list[str]
    templates: list[str]

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for p, y in zip(self.image_paths, self.labels):
            h.update(f"{image_source.identity(p)}|{y}\n".encode())
        h.update("\n".join(self.classnames + self.templates).encode())
        return h.hexdigest()[:16]

    def prompts(self) -> list[str]:
        """Class-major: every template for class 0, then class 1, ..."""
        return [t.replace("{c}", c) if "{c}" in t else t.format(c) for c in self.classnames for t in self.templates]


def _samples(ds) -> list[tuple[str, int]]:
    if hasattr(ds, "label_map") and hasattr(ds, "samples"):  # objectnet: labels come from the folder name
        return [(str(p), int(ds.label_map[Path(p).parent.name])) for p, _ in ds.samples]
    if hasattr(ds, "samples"):  # torchvision ImageFolder / ImageNet
        return [(str(p), int(y)) for p, y in ds.samples]
    if hasattr(ds, "fnames"):  # imagenetv2: the class index is the parent folder's name
        return [(str(p), int(Path(p).parent.name)) for p in ds.fnames]
    raise DataError(f"{type(ds).__name__}: this dataset's layout lists no files; it is not supported yet.")


def classes_from_shards(name: str, root: Path, shards: list[Path]) -> ClassificationSet:
    """clip_benchmark's webdataset export: image + ``cls`` per sample, classnames.txt and templates beside."""
    lists = {}
    for fname in ("classnames.txt", "zeroshot_classification_templates.txt"):
        f = root / fname
        if not f.is_file():
            raise DataError(f"{name}: {f} is missing; clip_benchmark's webdataset export writes it beside test/.")
        try:
            lists[fname] = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: {f} is not UTF-8 text ({exc}); re-save it as UTF-8.") from None
    paths, labels = labelled_samples(name, shards)
    return ClassificationSet(
        name, paths, labels, lists["classnames.txt"], lists["zeroshot_classification_templates.txt"]
    )


def clip_benchmark_names(name: str) -> tuple[list[str] | None, list[str] | None]:
    """clip_benchmark's English class names and zero-shot templates for ``name`` (None where it has none)."""
    import json

    import clip_benchmark

    folder = Path(clip_benchmark.__file__).parent / "datasets"
    classnames = json.loads((folder / "en_classnames.json").read_text()).get(name)
    templates = json.loads((folder / "en_zeroshot_classification_templates.json").read_text()).get(name)
    return classnames, templates


# Datasets labelled with ImageNet-1k's 1,000 class indices, as clip_benchmark gives them its names. A Hugging Face
# copy of any other set must use the folder copy's label order for the names to be right; its ClassLabel names
# are used where clip_benchmark has none.
SAME_CLASSES = {"imagenetv2": "imagenet1k", "imagenet_sketch": "imagenet1k"}


def from_hf(name: str, spec: str, split: str, columns: dict | None = None) -> ClassificationSet:
    """A labelled split of a Hugging Face dataset under a known name: class names and templates are
    clip_benchmark's for that name (so its metrics mean what they mean for the folder copy), else the
    dataset's own ClassLabel names and ImageNet's templates."""
    from bench.data import hf_source

    columns = columns or {}
    refs, labels, names = hf_source.labelled_images(
        spec, split, columns.get("image_column", "auto"), columns.get("label_column", "auto")
    )
    classnames, templates = clip_benchmark_names(SAME_CLASSES.get(name, name))
    classnames = classnames or names
    if not classnames:
        raise DataError(
            f"{name} from {spec}: no class names: clip_benchmark has none for {name!r} and the label "
            "column is not a ClassLabel. Cast it with Dataset.cast_column(label, ClassLabel(names=[...]))."
        )
    return ClassificationSet(
        name, refs, labels, list(classnames), list(templates or clip_benchmark_names("imagenet1k")[1])
    )


def load(data_root: Path, name: str, source: str | None = None, columns: dict | None = None) -> ClassificationSet:
    if source is not None:
        return validate(from_hf(name, source, "test", columns))
    if name not in LAYOUTS:
        from bench.core.registry import suggest

        raise DataError(
            f"unknown classification dataset {name!r}.{suggest(name, LAYOUTS)} Known: {', '.join(LAYOUTS)}."
        )
    layout, source = LAYOUTS[name]
    root = Path(data_root) / name
    shards = clip_benchmark_shards(root, "test") if root.is_dir() else None
    if shards is not None:
        return validate(classes_from_shards(name, root, shards))
    if not root.is_dir() or not any(root.iterdir()):
        raise DataError(
            f"{name}: folder {root} is missing or empty. Expected layout:\n  {layout}\nGet it from: {source}"
        )
    if name == "imagenetv2":
        # clip_benchmark's ImageNetV2 reader downloads the archive unless exactly 10,000 images are there.
        found = len(list((root / "ImageNetV2-matched-frequency").glob("**/*.jpeg")))
        if found != IMAGENETV2_SIZE:
            raise DataError(
                f"imagenetv2: found {found} of {IMAGENETV2_SIZE} images under "
                f"{root / 'ImageNetV2-matched-frequency'}. Expected layout:\n  {layout}\nGet it from: {source}"
            )
    from clip_benchmark.datasets.builder import build_dataset

    try:
        ds = build_dataset(name, root=str(root), transform=None, split="test", download=False)
    except Exception as exc:  # the builder reports malformed layouts in many ways; name the dataset and layout
        text = str(exc) if len(str(exc)) < 300 else str(exc)[:300] + " ..."
        raise DataError(
            f"{name}: clip_benchmark could not read {root} ({type(exc).__name__}: {text}). Expected layout:\n  {layout}"
        ) from None
    samples = _samples(ds)
    paths = [Path(p) for p, _ in samples]
    bad = [p for p in paths if not p.is_file() or p.stat().st_size == 0]
    if bad:
        raise DataError(
            f"{name}: {len(bad)} of {len(paths)} images are missing or empty "
            f"(e.g. {', '.join(map(str, bad[:5]))}); an interrupted download leaves these."
        )
    return validate(ClassificationSet(name, paths, [y for _, y in samples], list(ds.classes), list(ds.templates)))


def validate(ds: ClassificationSet) -> ClassificationSet:
    """Images, classes and templates present, every label a class index: what the metrics need."""
    if not ds.image_paths:
        raise DataError(f"{ds.name}: the test set has no images; point the data root at a complete copy.")
    if not ds.classnames or not ds.templates:
        raise DataError(
            f"{ds.name}: {len(ds.classnames)} class names and {len(ds.templates)} prompt templates; "
            "zero-shot classification needs both."
        )
    bad = [(p, y) for p, y in zip(ds.image_paths, ds.labels) if not 0 <= y < len(ds.classnames)]
    if bad:
        raise DataError(
            f"{ds.name}: {len(bad)} images have a label outside 0..{len(ds.classnames) - 1} (e.g. "
            f"{bad[0][0]} labelled {bad[0][1]}); the class names and the labels do not match."
        )
    return ds

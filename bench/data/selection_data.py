"""Image-caption selection sets: SugarCrepe and Winoground, in their official layouts (as
clip_benchmark's ``sugar_crepe`` and ``winoground`` builders read them) or from Hugging Face copies.

A set is a list of *instances*. Each instance has I images and C captions, and image k belongs with
caption k, as in clip_benchmark's ``image_caption_selection`` task (``gt = arange(min(I, C))``):
- SugarCrepe: one image, [true caption, hard negative];
- Winoground: two images, two captions.

Nothing is downloaded (clip_benchmark's builder fetches a missing SugarCrepe file with wget): a
missing or partial copy fails at once, with the layout it expects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import DataError
from bench.data import image_source

SUGARCREPE_TASKS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
SUGARCREPE_LAYOUT = """\
DATA_ROOT/sugar_crepe/{task}.json   (SugarCrepe's data/{task}.json: {id: {filename, caption, negative_caption}})
DATA_ROOT/sugar_crepe/val2017/*.jpg (COCO val2017, the images every task names)
as clip_benchmark's sugar_crepe/{task} builder reads them (root: DATA_ROOT/sugar_crepe)."""
SUGARCREPE_SOURCE = "github.com/RAIVNLab/sugar-crepe (data/*.json); images: images.cocodataset.org/zips/val2017.zip"
WINOGROUND_LAYOUT = """\
DATA_ROOT/winoground/examples.jsonl  (one JSON per line: id, caption_0, caption_1, ...)
DATA_ROOT/winoground/images/ex_{id}_img_{0,1}.png
the data/ folder of the facebook/winoground dataset repository (images.zip unpacked); or
sources: {winoground: hf:PATH} for a Hugging Face copy (columns image_0, image_1, caption_0, caption_1)."""
WINOGROUND_SOURCE = "huggingface.co/datasets/facebook/winoground (gated: accept its terms, then download)"

DATASETS = {f"sugarcrepe_{t}": (SUGARCREPE_LAYOUT.replace("{task}", t), SUGARCREPE_SOURCE) for t in SUGARCREPE_TASKS}
DATASETS["winoground"] = (WINOGROUND_LAYOUT, WINOGROUND_SOURCE)


@dataclass
class SelectionSet:
    name: str
    image_paths: list
    captions: list[str]
    instances: list[tuple[list[int], list[int]]]  # (image rows, caption rows); image k goes with caption k

    @property
    def split(self) -> str:
        return "test"

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for p in self.image_paths:
            h.update(f"{image_source.identity(p)}\n".encode())
        h.update("\n".join(self.captions).encode())
        h.update(json.dumps(self.instances).encode())
        return h.hexdigest()[:16]

    def validate(self) -> SelectionSet:
        if not self.instances:
            raise DataError(f"{self.name} has no instances; point the data root at a complete copy.")
        for k, (imgs, caps) in enumerate(self.instances):
            if not imgs or len(caps) < 2 or any(not self.captions[c].strip() for c in caps):
                raise DataError(
                    f"{self.name}: instance {k} has {len(imgs)} image(s) and {len(caps)} caption(s), or an empty "
                    "caption; an instance needs at least one image and two captions to choose between."
                )
        return self


def _missing(name: str, problem: str) -> DataError:
    layout, source = DATASETS[name]
    return DataError(f"{name}: {problem} Expected layout:\n{layout}\nSource: {source}")


def _check_files(name: str, paths: list[Path]) -> None:
    missing = [str(p) for p in dict.fromkeys(paths) if not Path(p).is_file()]
    if missing:
        raise _missing(name, f"{len(missing)} image(s) are missing (e.g. {', '.join(missing[:3])}).")


def sugarcrepe(root: Path, task: str) -> SelectionSet:
    name = f"sugarcrepe_{task}"
    folder = Path(root) / "sugar_crepe"
    ann_file = folder / f"{task}.json"
    if not ann_file.is_file():
        raise _missing(name, f"{ann_file} does not exist.")
    try:
        ann = json.loads(ann_file.read_text(encoding="utf-8"))
        items = [(str(v["filename"]), str(v["caption"]), str(v["negative_caption"])) for v in ann.values()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _missing(name, f"{ann_file} is not SugarCrepe's format ({type(exc).__name__}: {exc}).") from None
    paths, captions, instances = [], [], []
    for k, (filename, caption, negative) in enumerate(items):  # the file's order, as clip_benchmark's reader
        paths.append(folder / "val2017" / filename)
        captions += [caption, negative]
        instances.append(([k], [2 * k, 2 * k + 1]))
    _check_files(name, paths)
    return SelectionSet(name, paths, captions, instances)


def winoground(root: Path) -> SelectionSet:
    name = "winoground"
    folder = Path(root) / "winoground"
    examples = folder / "examples.jsonl"
    if not examples.is_file():
        raise _missing(name, f"{examples} does not exist.")
    try:
        rows = [json.loads(line) for line in examples.read_text(encoding="utf-8").splitlines() if line.strip()]
        items = [(r["id"], str(r["caption_0"]), str(r["caption_1"])) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise _missing(name, f"{examples} is not Winoground's format ({type(exc).__name__}: {exc}).") from None
    paths, captions, instances = [], [], []
    for k, (ex, c0, c1) in enumerate(items):
        paths += [folder / "images" / f"ex_{ex}_img_0.png", folder / "images" / f"ex_{ex}_img_1.png"]
        captions += [c0, c1]
        instances.append(([2 * k, 2 * k + 1], [2 * k, 2 * k + 1]))
    _check_files(name, paths)
    return SelectionSet(name, paths, captions, instances)


def from_hf(name: str, spec: str) -> SelectionSet:
    """A Hugging Face copy: Winoground's columns (image_0, image_1, caption_0, caption_1), or SugarCrepe's
    (image, caption, negative_caption)."""
    from bench.data import hf_source

    ds = hf_source.open_dataset(spec, "test")
    if name == "winoground":
        need = ("image_0", "image_1", "caption_0", "caption_1")
    else:
        need = ("image", "caption", "negative_caption")
    absent = [c for c in need if c not in ds.column_names]
    if absent:
        raise DataError(
            f"{spec}: {name} needs the columns {', '.join(need)}; missing {', '.join(absent)} (it has "
            f"{', '.join(ds.column_names)})."
        )
    image_columns = [c for c in need if c.startswith("image")]
    refs = {c: hf_source.image_refs(ds, spec, "test", c) for c in image_columns}
    for c in image_columns:
        hf_source.check_images(refs[c], spec)
    texts = {c: [str(x) for x in ds[c]] for c in need if c not in image_columns}
    paths, captions, instances = [], [], []
    for k in range(len(ds)):
        first_image, first_caption = len(paths), len(captions)
        paths += [refs[c][k] for c in image_columns]
        captions += [texts[c][k] for c in texts]
        instances.append(
            (
                list(range(first_image, first_image + len(image_columns))),
                list(range(first_caption, first_caption + len(texts))),
            )
        )
    return SelectionSet(name, paths, captions, instances)


def load(root: Path, name: str, source: str | None = None) -> SelectionSet:
    if name not in DATASETS:
        from bench.core.registry import suggest

        raise DataError(
            f"unknown compositionality dataset {name!r}.{suggest(name, DATASETS)} Known: {', '.join(DATASETS)}."
        )
    if source is not None:
        return from_hf(name, source).validate()
    if name == "winoground":
        return winoground(root).validate()
    return sugarcrepe(root, name[len("sugarcrepe_") :]).validate()


def check_all(root: Path) -> list[dict]:
    """One row per dataset for --check-data."""
    rows = []
    for name, (layout, source) in DATASETS.items():
        try:
            ds = load(root, name)
            rows.append({"dataset": name, "ready": True, "detail": f"{len(ds.instances)} instances"})
        except DataError as exc:
            rows.append({"dataset": name, "ready": False, "detail": str(exc), "layout": layout, "source": source})
    return rows

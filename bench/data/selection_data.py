"""Image-caption selection sets: SugarCrepe and Winoground, in their official layouts (as
clip_benchmark's ``sugar_crepe`` and ``winoground`` builders read them) or from Hugging Face copies;
ARO's VG-Relation and VG-Attribution in the layout its authors' code reads (clip_benchmark has no ARO).

A set is a list of *instances*. Each instance has I images and C captions, and image k belongs with
caption k, as in clip_benchmark's ``image_caption_selection`` task (``gt = arange(min(I, C))``):
- SugarCrepe: one image, [true caption, hard negative];
- ARO VG-Relation / VG-Attribution: one image cropped to the relation's or the objects' box, [true
  caption, false caption]; each instance also names its group (the relation, the attribute pair) for
  ARO's macro accuracy;
- Winoground: two images, two captions.

Nothing is downloaded (clip_benchmark's builder fetches a missing SugarCrepe file with wget): a
missing or partial copy fails at once, with the layout it expects.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

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

ARO_LAYOUT = """\
DATA_ROOT/aro/visual_genome_{task}.json  (a list of {image_path, bbox_x, bbox_y, bbox_w, bbox_h, true_caption,
                                          false_caption, and relation_name (relation) or attributes [a, b]})
DATA_ROOT/aro/images/                     (vgr_vga_images.zip unpacked: the images every entry names)
as ARO's VG_Relation and VG_Attribution read them (root_dir: DATA_ROOT/aro)."""
ARO_SOURCE = "github.com/mertyg/vision-language-models-are-bows (dataset_zoo/aro_datasets.py: the files' Drive ids)"
ARO_TASKS = ("relation", "attribution")
# ARO's macro accuracy leaves out relations whose two objects can swap without making the caption false
# (its notebook "Replicate ARO! VG-Relation, VG-Attribution"), and attribute pairs with fewer than 25 cases.
ARO_SYMMETRIC_RELATIONS = frozenset(
    "adjusting|attached to|between|bigger than|biting|boarding|brushing|chewing|cleaning|climbing|close to|"
    "coming from|coming out of|contain|crossing|dragging|draped over|drinking|drinking from|driving|driving down|"
    "driving on|eating from|eating in|enclosing|exiting|facing|filled with|floating in|floating on|flying|"
    "flying above|flying in|flying over|flying through|full of|going down|going into|going through|grazing in|"
    "growing in|growing on|guiding|hanging from|hanging in|hanging off|hanging over|higher than|holding onto|"
    "hugging|in between|jumping off|jumping on|jumping over|kept in|larger than|leading|leaning over|leaving|"
    "licking|longer than|looking in|looking into|looking out|looking over|looking through|lying next to|"
    "lying on top of|making|mixed with|mounted on|moving|on the back of|on the edge of|on the front of|"
    "on the other side of|opening|painted on|parked at|parked beside|parked by|parked in|parked in front of|"
    "parked near|parked next to|perched on|petting|piled on|playing|playing in|playing on|playing with|pouring|"
    "reaching for|reading|reflected on|riding on|running in|running on|running through|seen through|"
    "sitting behind|sitting beside|sitting by|sitting in front of|sitting near|sitting next to|sitting under|"
    "skiing down|skiing on|sleeping in|sleeping on|smiling at|sniffing|splashing|sprinkled on|stacked on|"
    "standing against|standing around|standing behind|standing beside|standing in front of|standing near|"
    "standing next to|staring at|stuck in|surrounding|swimming in|swinging|talking to|topped with|touching|"
    "traveling down|traveling on|tying|typing on|underneath|wading in|waiting for|walking across|walking by|"
    "walking down|walking next to|walking through|working in|working on|worn on|wrapped around|wrapped in|by|of|"
    "near|next to|with|beside|on the side of|around".split("|")
)
ARO_MIN_ATTRIBUTE_CASES = 25

DATASETS = {f"sugarcrepe_{t}": (SUGARCREPE_LAYOUT.replace("{task}", t), SUGARCREPE_SOURCE) for t in SUGARCREPE_TASKS}
DATASETS.update({f"aro_vg_{t}": (ARO_LAYOUT.replace("{task}", t), ARO_SOURCE) for t in ARO_TASKS})
DATASETS["winoground"] = (WINOGROUND_LAYOUT, WINOGROUND_SOURCE)


@dataclass
class SelectionSet:
    name: str
    image_paths: list
    captions: list[str]
    instances: list[tuple[list[int], list[int]]]  # (image rows, caption rows); image k goes with caption k
    groups: list[str] | None = None  # per instance, ARO's group (relation, attribute pair)
    in_macro: list[bool] | None = None  # per instance, whether its group counts in ARO's macro accuracy

    @property
    def split(self) -> str:
        return "test"

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for p in self.image_paths:
            h.update(f"{image_source.identity(p)}\n".encode())
        h.update("\n".join(self.captions).encode())
        h.update(json.dumps(self.instances).encode())
        if self.groups is not None:
            h.update(json.dumps([self.groups, self.in_macro]).encode())
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


class CroppedImages(image_source.IndexedSource):
    """Image files each read cropped to a box (x, y, w, h in pixels), as ARO crops before preprocessing."""

    def __init__(self, files: list[str], boxes: list[tuple[float, float, float, float]]):
        self.files, self.boxes = [str(f) for f in files], [tuple(b) for b in boxes]
        self._key = "crop-" + hashlib.sha256(json.dumps([self.files, self.boxes]).encode()).hexdigest()[:16]

    def key(self) -> str:
        return self._key

    def open_row(self, row: int) -> Image.Image:
        x, y, w, h = self.boxes[row]
        with Image.open(self.files[row]) as img:
            return image_source.to_rgb(img).crop((x, y, x + w, y + h))

    def stamp(self) -> str:
        h = hashlib.sha256(self._key.encode())
        for f in dict.fromkeys(self.files):
            st = os.stat(f)
            h.update(f"{Path(f).name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def row_size(self, row: int) -> int | None:
        return os.stat(self.files[row]).st_size


def aro(root: Path, task: str) -> SelectionSet:
    """ARO's VG-Relation or VG-Attribution: each entry's image cropped to its box, [true, false] caption."""
    name = f"aro_vg_{task}"
    folder = Path(root) / "aro"
    ann_file = folder / f"visual_genome_{task}.json"
    if not ann_file.is_file():
        raise _missing(name, f"{ann_file} does not exist.")
    try:
        entries = json.loads(ann_file.read_text(encoding="utf-8"))
        items = [
            (
                str(e["image_path"]),
                tuple(float(e[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")),
                str(e["true_caption"]),
                str(e["false_caption"]),
                str(e["relation_name"]) if task == "relation" else f"{e['attributes'][0]}_{e['attributes'][1]}",
            )
            for e in entries
        ]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise _missing(name, f"{ann_file} is not ARO's format ({type(exc).__name__}: {exc}).") from None
    bad = [k for k, (_, box, *_rest) in enumerate(items) if box[2] <= 0 or box[3] <= 0]
    if bad:
        raise _missing(name, f"{ann_file}: entries {bad[:5]} have an empty box (bbox_w or bbox_h <= 0).")
    files = [folder / "images" / path for path, *_ in items]
    _check_files(name, files)
    prefix = image_source.register(CroppedImages(files, [box for _, box, *_ in items]))
    paths, captions, instances, groups = [], [], [], []
    for k, (_, _, true, false, group) in enumerate(items):  # the file's order, as ARO's reader
        paths.append(f"{prefix}{k}")
        captions += [true, false]
        instances.append(([k], [2 * k, 2 * k + 1]))
        groups.append(group)
    if task == "relation":
        in_macro = [g not in ARO_SYMMETRIC_RELATIONS for g in groups]
    else:
        counts = Counter(groups)
        in_macro = [counts[g] >= ARO_MIN_ATTRIBUTE_CASES for g in groups]
    return SelectionSet(name, paths, captions, instances, groups, in_macro)


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

    if name.startswith("aro_"):
        raise DataError(
            f"sources.{name} = hf:{spec}: ARO's Hugging Face copies differ in their columns and boxes; read it "
            f"from its folder instead. Expected layout:\n{DATASETS[name][0]}"
        )
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
    if name.startswith("aro_vg_"):
        return aro(root, name[len("aro_vg_") :]).validate()
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

"""Hugging Face datasets as a data source: ``hf:PATH_OR_NAME[:SPLIT]``, offline, never a download.

PATH is a folder written by ``save_to_disk`` (a Dataset or a DatasetDict), or parquet file(s) (a
file, or a folder of them); a NAME is looked up in the local Hugging Face cache only
(``HF_DATASETS_OFFLINE=1`` is set before ``datasets`` is asked for anything). Images are read as
their encoded bytes and decoded by the same code as files on disk (bench/data/image_source.py), so an
undecodable image is handled as any other. A dataset's identity is its own fingerprint plus the sizes
and modification times of its Arrow files, so an edited copy gets new features and new results.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bench.core import hashing
from bench.core.errors import DataError
from bench.data import image_source
from bench.data.types import RetrievalSet

PREFIX = "hf:"
# Column names tried in order when the option is "auto" (COCO and Flickr30k are usually published
# with a list of captions per image, e.g. "sentences" or "captions").
AUTO_COLUMNS = {
    "image": ("image", "img", "jpg", "png", "webp"),
    "caption": ("caption", "captions", "sentences", "text", "raw"),
    "label": ("label", "labels", "cls", "fine_label"),
}


def is_hf(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """``hf:/data/coco:test`` -> ("/data/coco", "test"); the split is the last ``:`` part without a slash."""
    body = spec[len(PREFIX) :]
    head, sep, tail = body.rpartition(":")
    if sep and head and tail and "/" not in tail and "\\" not in tail:
        return head, tail
    return body, None


def _datasets():
    # Never a download, whatever the caller's environment says: the libraries' own offline switches are set,
    # not the process environment (which simbench never writes).
    import datasets
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if hasattr(datasets.config, name):
            setattr(datasets.config, name, True)
    datasets.disable_progress_bars()
    return datasets


def open_dataset(spec: str, default_split: str | None = None):
    """The ``datasets.Dataset`` a spec names, or a DataError that says what was found and what to pass."""
    datasets = _datasets()
    where, split = parse(spec)
    split = split or default_split
    path = Path(where).expanduser()
    try:
        if path.is_dir() and any(
            (path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")
        ):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix == ".parquet" or path.is_dir() and any(path.glob("*.parquet")):
            files = [str(path)] if path.is_file() else sorted(str(p) for p in path.glob("*.parquet"))
            loaded = datasets.load_dataset("parquet", data_files={split or "train": files})
        elif path.exists():
            raise DataError(
                f"{spec}: {path} is neither a save_to_disk folder (state.json / dataset_dict.json) nor "
                "parquet file(s). Write it with Dataset.save_to_disk(PATH) or Dataset.to_parquet(PATH)."
            )
        else:
            loaded = datasets.load_dataset(where)  # the local cache only: offline
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 (datasets raises many kinds; name the spec and the fix)
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise DataError(
            f"{spec}: could not open it offline ({type(exc).__name__}: {first}). Nothing is downloaded: pass a "
            "folder written by save_to_disk, parquet file(s), or the name of a dataset already in the local "
            "Hugging Face cache."
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) == 1:
            split = next(iter(loaded))
        if split not in loaded:
            raise DataError(f"{spec}: split {split!r} not found; it has {', '.join(loaded)}. Write hf:PATH:SPLIT.")
        loaded = loaded[split]
    return loaded


def column(ds, spec: str, role: str, chosen: str) -> str:
    """The column for ``role`` (image, caption, label): the one chosen, or the first known name present."""
    names = list(ds.column_names)
    candidates = AUTO_COLUMNS[role] if chosen == "auto" else (chosen,)
    for name in candidates:
        if name in names:
            return name
    raise DataError(
        f"{spec}: no {role} column ({'tried ' + ', '.join(candidates) if chosen == 'auto' else repr(chosen)}); "
        f"its columns are {', '.join(names)}. Set the suite option {role}_column."
    )


@dataclass(frozen=True)
class HFImages(image_source.IndexedSource):
    """The image column of one split of a Hugging Face dataset, read by row."""

    spec: str
    split: str | None
    image_column: str

    def key(self) -> str:
        return "hf-" + hashing.json_sha256([self.spec, self.split, self.image_column], 16)

    def _rows(self):
        return image_source.opened(self, lambda: self.undecoded(open_dataset(self.spec, self.split)))

    def undecoded(self, ds):
        """The dataset with its image column as stored bytes (decoded later by image_source, like files)."""
        import datasets

        if isinstance(ds.features[self.image_column], datasets.Image):
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        return ds

    def _value(self, row: int):
        value = self._rows()[int(row)][self.image_column]
        if isinstance(value, dict):  # an Image feature: encoded bytes, or a path beside the dataset
            if value.get("bytes"):
                return value["bytes"]
            return value.get("path")
        return value  # a plain string column: a file path

    def open_row(self, row: int) -> Image.Image:
        value = self._value(row)
        if isinstance(value, (bytes, bytearray)):
            with Image.open(io.BytesIO(value)) as img:
                img.load()
                return img.copy()
        if not value:
            raise OSError(f"row {row} has no image")
        with Image.open(value) as img:
            img.load()
            return img.copy()

    def row_size(self, row: int) -> int | None:
        value = self._value(row)
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        return Path(value).stat().st_size if value and Path(value).is_file() else 0

    def empty_rows(self) -> list[int]:
        import pyarrow as pa
        import pyarrow.compute as pc

        ds = self._rows()
        if getattr(ds, "_indices", None) is not None:  # a selection: fall back to row by row
            return [i for i in range(len(ds)) if not self.row_size(i)]
        col = ds.data.table.column(self.image_column)
        empty, start = [], 0
        for chunk in col.chunks:
            if pa.types.is_struct(chunk.type):
                sizes = pc.fill_null(pc.binary_length(chunk.field("bytes")), 0).to_numpy(zero_copy_only=False)
                paths = chunk.field("path").to_pylist() if (sizes == 0).any() else None
                for i in (sizes == 0).nonzero()[0]:
                    p = paths[i]
                    if not p or not Path(p).is_file() or Path(p).stat().st_size == 0:
                        empty.append(start + int(i))
            else:  # plain path strings
                for i, p in enumerate(chunk.to_pylist()):
                    if not p or not Path(p).is_file() or Path(p).stat().st_size == 0:
                        empty.append(start + i)
            start += len(chunk)
        return empty

    def stamp(self) -> str:
        ds = self._rows()
        files = []
        for f in ds.cache_files:
            p = Path(f["filename"])
            st = p.stat()
            files.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
        return f"hf:{ds._fingerprint}:{len(ds)}:{','.join(files)}"


def image_refs(ds, spec: str, split: str | None, image_column: str) -> list[str]:
    source = HFImages(spec, split, image_column)
    prefix = image_source.register(source)
    image_source.remember(source, source.undecoded(ds))  # opened once per process, not again by the first row
    return [f"{prefix}{i}" for i in range(len(ds))]


def check_images(refs: list[str], spec: str, limit: int = 5) -> None:
    """Missing or empty images fail before any work, as for files on disk. Encoded sizes are read from the
    Arrow column without copying any image into Python; only rows that hold a path are stat'ed."""
    if not refs:
        return
    source, _ = image_source.indexed(refs[0])
    empty = source.empty_rows()
    if empty:
        raise DataError(
            f"{spec}: {len(empty)} of {len(refs)} rows have no image (rows {empty[:limit]}); remove those "
            "rows or fill them in."
        )


def _captions(value, spec: str, row: int) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    items = [c.strip() for c in items if isinstance(c, str) and c.strip()]
    if not items:
        raise DataError(f"{spec}: row {row} has no caption; remove the row or fill it in.")
    return items


def retrieval_set(spec: str, name: str, split: str, image_column: str = "auto", caption_column: str = "auto"):
    """Image-caption pairs: one row per image, its caption a string or a list of strings."""
    ds = open_dataset(spec, split)
    image_col, caption_col = column(ds, spec, "image", image_column), column(ds, spec, "caption", caption_column)
    refs = image_refs(ds, spec, split, image_col)
    check_images(refs, spec)
    captions, caption_image = [], []
    for row, value in enumerate(ds[caption_col]):
        lines = _captions(value, spec, row)
        captions += lines
        caption_image += [row] * len(lines)
    return RetrievalSet(name, split, refs, captions, caption_image)


def labelled_images(spec: str, split: str, image_column: str = "auto", label_column: str = "auto"):
    """(image references, integer labels, class names from a ClassLabel feature or None)."""
    ds = open_dataset(spec, split)
    image_col, label_col = column(ds, spec, "image", image_column), column(ds, spec, "label", label_column)
    refs = image_refs(ds, spec, split, image_col)
    check_images(refs, spec)
    labels = ds[label_col]
    if not all(isinstance(y, int) and not isinstance(y, bool) for y in labels):
        raise DataError(
            f"{spec}: column {label_col!r} must hold integer class indices (a ClassLabel), e.g. "
            f"{labels[0]!r} is not one; map names to indices with Dataset.class_encode_column."
        )
    feature = ds.features[label_col]
    names = list(feature.names) if hasattr(feature, "names") else None
    return refs, [int(y) for y in labels], names

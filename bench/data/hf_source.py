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


def _parquet_cache(datasets, files: list[str]) -> str:
    """A conversion folder named by the parquet files' content: ``datasets`` keys its own conversion by path
    and modification time, so a different file with the same time (``cp -p``, ``rsync -t``) was served from
    the old conversion. Hashed once per command (snapshot.memo), as the code is."""
    from bench.core import snapshot

    def digest() -> str:
        return hashing.json_sha256([[Path(f).name, hashing.file_sha256(f)] for f in files], 16)

    stats = [[f, Path(f).stat().st_size, Path(f).stat().st_mtime_ns] for f in files]
    key = snapshot.memo(f"parquet:{hashing.json_sha256(stats, 16)}", digest)
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "simbench-parquet" / key)


def folder_of(spec: str) -> Path | None:
    """The folder a spec's dataset lives in (relative image paths are read from there); None for a name."""
    path = Path(parse(spec)[0]).expanduser()
    return (path if path.is_dir() else path.parent) if path.exists() else None


def open_dataset(spec: str, default_split: str | None = None):
    """The ``datasets.Dataset`` a spec names, or a DataError that says what was found and what to pass.
    A split named in the spec wins over the suite's ``default_split``; a single Dataset (no DatasetDict)
    has no splits, so naming one that it is not is refused rather than ignored."""
    datasets = _datasets()
    where, named = parse(spec)
    split = named or default_split
    path = Path(where).expanduser()
    try:
        if path.is_dir() and any(
            (path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")
        ):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix == ".parquet" or path.is_dir() and any(path.glob("*.parquet")):
            files = [str(path)] if path.is_file() else sorted(str(p) for p in path.glob("*.parquet"))
            loaded = datasets.load_dataset(
                "parquet", data_files={split or "train": files}, cache_dir=_parquet_cache(datasets, files)
            )
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
        if path.exists() and _has_no_rows(path):
            raise DataError(f"{spec}: the dataset has 0 rows; point it at a dataset with data.") from None
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
    elif named is not None:
        own = None if loaded.split is None else str(loaded.split)
        if own != named:
            raise DataError(
                f"{spec}: it is a single Dataset ({'no split' if own is None else f'split {own!r}'}), not a "
                f"DatasetDict, so split {named!r} cannot be chosen from it. Drop ':{named}', or save a "
                "DatasetDict with that split (DatasetDict({...}).save_to_disk(PATH))."
            )
    if len(loaded) == 0:
        raise DataError(f"{spec}: split {split or '(the only one)'} has 0 rows; point it at a dataset with data.")
    return loaded


def _has_no_rows(path: Path) -> bool:
    """Whether a save_to_disk folder says it holds no rows (``datasets`` fails on it with an IndexError)."""
    import json

    for state in [path / "state.json", *path.glob("*/state.json")]:
        try:
            if json.loads(state.read_text()).get("_data_files") == []:
                return True
        except (OSError, ValueError):
            continue
    return False


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


def image_kind(ds, spec: str, col: str) -> str:
    """How a column stores its images, read from the dataset's features (never guessed from a value):
    "image" (an Image feature: bytes or a path), "bytes" (binary) or "path" (strings)."""
    import datasets

    feature = ds.features[col]
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary"):
        return "bytes"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "path"
    raise DataError(
        f"{spec}: column {col!r} holds {feature}, not images. An image column is an Image feature, encoded "
        "bytes (binary) or file paths (strings); set the suite option image_column to it."
    )


@dataclass(frozen=True)
class HFImages(image_source.IndexedSource):
    """The image column of one split of a Hugging Face dataset, read by row. Relative paths are read from
    the dataset's own folder (``base``), where ``save_to_disk`` or the parquet files put it."""

    spec: str
    split: str | None
    image_column: str
    kind: str = "image"  # image_kind()
    base: str = ""

    def key(self) -> str:
        return "hf-" + hashing.json_sha256([self.spec, self.split, self.image_column, self.kind, self.base], 16)

    def _rows(self):
        return image_source.opened(self, lambda: self.undecoded(open_dataset(self.spec, self.split)))

    def undecoded(self, ds):
        """The dataset with its image column as stored bytes (decoded later by image_source, like files)."""
        import datasets

        if self.kind == "image":
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        return ds

    def resolve(self, p: str | None) -> Path | None:
        if not p:
            return None
        path = Path(p).expanduser()
        return path if path.is_absolute() or not self.base else Path(self.base) / path

    def _value(self, row: int):
        value = self._rows()[int(row)][self.image_column]
        if self.kind == "image":  # encoded bytes, or a path
            return value.get("bytes") or self.resolve(value.get("path")) if value else None
        if self.kind == "bytes":
            return value
        return self.resolve(value)

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

    def stored(self) -> tuple[list[int], list[tuple[int, Path | None]]]:
        """(rows whose bytes are stored but empty, [(row, path)] of rows stored as a path), read from the
        Arrow column without copying any image into Python."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ds = self._rows()
        if getattr(ds, "_indices", None) is not None:  # a selection: row by row
            values = [(i, self._value(i)) for i in range(len(ds))]
            return [i for i, v in values if isinstance(v, bytes) and not v], [
                (i, v) for i, v in values if not isinstance(v, bytes)
            ]
        empty, paths, start = [], [], 0
        for chunk in ds.data.table.column(self.image_column).chunks:
            if pa.types.is_struct(chunk.type):
                sizes = pc.fill_null(pc.binary_length(chunk.field("bytes")), 0).to_numpy(zero_copy_only=False)
                names = chunk.field("path").to_pylist() if (sizes == 0).any() else []
                paths += [(start + int(i), self.resolve(names[i])) for i in (sizes == 0).nonzero()[0]]
            elif pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type):
                sizes = pc.fill_null(pc.binary_length(chunk), 0).to_numpy(zero_copy_only=False)
                empty += [start + int(i) for i in (sizes == 0).nonzero()[0]]
            else:  # path strings
                paths += [(start + i, self.resolve(p)) for i, p in enumerate(chunk.to_pylist())]
            start += len(chunk)
        return empty, paths

    def empty_rows(self) -> list[int]:
        empty, paths = self.stored()
        missing = [i for i, p in paths if p is None or not p.is_file() or p.stat().st_size == 0]
        return sorted(empty + missing)

    def stamp(self) -> str:
        """The dataset's fingerprint and Arrow files, and the size and time of every image file it names by
        path: rewriting the images a dataset points to is a new identity (new features, new results)."""
        ds = self._rows()
        files = []
        for f in ds.cache_files:
            p = Path(f["filename"])
            st = p.stat()
            files.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
        _, paths = self.stored()
        images = [[str(p), *_stat(p)] for _, p in paths]
        linked = f":images-{hashing.json_sha256(images, 16)}" if images else ""
        return f"hf:{ds._fingerprint}:{len(ds)}:{','.join(files)}{linked}"


def _stat(p: Path | None) -> list:
    try:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]
    except (OSError, AttributeError):
        return [None, None]


def image_refs(ds, spec: str, split: str | None, image_column: str) -> list[str]:
    base = folder_of(spec)
    source = HFImages(spec, split, image_column, image_kind(ds, spec, image_column), str(base) if base else "")
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
        _, paths = source.stored()
        named = dict(paths)
        example = next((named[i] for i in empty if named.get(i) is not None), None)
        where = (
            f" (e.g. {str(example)!r}; relative paths are read from the dataset's folder {source.base!r})"
            if example is not None and source.base
            else (f" (e.g. {str(example)!r} is not a file)" if example is not None else "")
        )
        raise DataError(
            f"{spec}: {len(empty)} of {len(refs)} rows have no image{where} (rows {empty[:limit]}); remove those "
            "rows or fill them in."
        )


TEXT_FIELDS = ("raw", "caption", "text", "sentence", "sent")  # the caption inside COCO-style records


def caption_reader(ds, spec: str, col: str):
    """A function row value -> list of captions, chosen from the column's feature (never from a value's
    Python type): a string; a list of strings; a list of records (``List({raw, sentid})``) or a
    ``Sequence`` of records (which ``datasets`` returns as a dict of lists), read at their text field."""
    import datasets

    feature = ds.features[col]

    def is_text(f) -> bool:
        return isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")

    def text_field(fields: dict) -> str:
        for name in TEXT_FIELDS:
            if name in fields and (is_text(fields[name]) or is_text(getattr(fields[name], "feature", None))):
                return name
        raise DataError(
            f"{spec}: column {col!r} holds records with fields {', '.join(fields)}, none of them a caption "
            f"({' or '.join(TEXT_FIELDS)}); set caption_column to a text column."
        )

    inner = getattr(feature, "feature", None)
    if is_text(feature):
        return lambda v: [v]
    if isinstance(feature, (datasets.List, datasets.LargeList)) and is_text(inner):
        return lambda v: list(v or [])
    if isinstance(feature, (datasets.List, datasets.LargeList)) and isinstance(inner, dict):
        name = text_field(inner)
        return lambda v: [item.get(name) for item in v or []]
    if isinstance(feature, dict):  # Sequence({...}): a dict of lists per row
        name = text_field(feature)
        return lambda v: list((v or {}).get(name) or [])
    raise DataError(
        f"{spec}: column {col!r} holds {feature}, not captions: a string, a list of strings, or records with a "
        f"text field ({', '.join(TEXT_FIELDS)}). Set caption_column to the caption column."
    )


def _captions(items: list, spec: str, row: int) -> list[str]:
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
    read = caption_reader(ds, spec, caption_col)
    captions, caption_image = [], []
    for row, value in enumerate(ds[caption_col]):
        lines = _captions(read(value), spec, row)
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

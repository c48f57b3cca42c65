"""Where an image's bytes live: a plain file, a member of a webdataset tar shard, or a row of an indexed
source (a Hugging Face dataset, a torchvision dataset held in arrays such as CIFAR).

A tar member is addressed as ``/path/shard.tar::member.jpg`` so that the rest of the pipeline (file
lists, fingerprints, the feature cache) treats both alike. Each process keeps its open shards and
their member index, so reading N images from a shard costs one header scan, not N. The handles are
keyed by process: a DataLoader worker forked from a parent that had a shard open would otherwise
share that file's offset with its siblings, and their interleaved seeks and reads return another
member's bytes (seen as images that "cannot be identified", now and then).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from PIL import Image

SEP = "::"
INDEXED = "indexed:"  # ``indexed:KEY::ROW``: row ROW of the source registered under KEY
_open_tars: dict[tuple[int, str], tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]] = {}


class IndexedSource:
    """A dataset whose images are addressed by row. Subclasses are small picklable descriptions (so a
    DataLoader worker can reopen them); ``open_row`` decodes through ``to_rgb`` like a file, ``stamp`` is
    what identifies the source's content (its own fingerprint and its files' sizes and times)."""

    def key(self) -> str:
        raise NotImplementedError

    def open_row(self, row: int) -> Image.Image:
        raise NotImplementedError

    def stamp(self) -> str:
        raise NotImplementedError

    def row_size(self, row: int) -> int | None:
        """Bytes of the row's encoded image when known (a missing or empty image is refused early)."""
        return None


_sources: dict[str, IndexedSource] = {}
_stamps: dict[tuple[int, str], str] = {}
_opened: dict[tuple[int, str], object] = {}  # what a source opened, per process (workers reopen their own)


def opened(source: IndexedSource, load):
    """What ``load()`` returns for ``source`` in this process, loaded once until the next ``reset``."""
    key = (os.getpid(), source.key())
    if key not in _opened:
        _opened[key] = load()
    return _opened[key]


def remember(source: IndexedSource, value) -> None:
    """Hand a source what its loader would load (the caller has just read it)."""
    _opened[(os.getpid(), source.key())] = value


def reset() -> None:
    """Forget opened sources and their stamps, so the next run reads the data as it is now (a dataset
    rewritten between two runs of one process is never served from the first run's memory)."""
    _stamps.clear()
    _opened.clear()


def register(source: IndexedSource) -> str:
    """Register a source; returns the prefix of its rows' references (``prefix + str(row)``)."""
    _sources[source.key()] = source
    return f"{INDEXED}{source.key()}{SEP}"


def sources_for(paths) -> dict[str, IndexedSource]:
    """The sources the references in ``paths`` need (carried to DataLoader workers with the file list)."""
    keys = {str(p)[len(INDEXED) :].split(SEP, 1)[0] for p in paths if str(p).startswith(INDEXED)}
    return {k: _sources[k] for k in keys}


def ensure(sources: dict[str, IndexedSource]) -> None:
    for k, source in sources.items():
        _sources.setdefault(k, source)


def indexed(path) -> tuple[IndexedSource, int] | None:
    text = str(path)
    if not text.startswith(INDEXED):
        return None
    key, row = text[len(INDEXED) :].split(SEP, 1)
    if key not in _sources:
        raise OSError(f"image source {key} is not registered in this process (its dataset was not loaded)")
    return _sources[key], int(row)


def split(path) -> tuple[Path, str | None]:
    text = str(path)
    if SEP in text:
        shard, member = text.split(SEP, 1)
        return Path(shard), member
    return Path(text), None


def _tar(shard: Path):
    key = (os.getpid(), str(shard))
    if key not in _open_tars:
        tf = tarfile.open(shard)
        _open_tars[key] = (tf, {m.name: m for m in tf.getmembers() if m.isfile()})
    return _open_tars[key]


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, with high bit-depth greyscale scaled rather than clipped.

    PIL's ``convert("RGB")`` clips 16-bit and 32-bit greyscale (modes I;16, I, F) at 255, so a
    16-bit PNG comes out almost all white; here the full range maps onto 0..255 instead.
    """
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "I":
            top = 65535.0 if arr.size and arr.max() > 255 else 255.0
        else:  # F: floats in [0, 1] by convention, else 8-bit values
            top = 1.0 if arr.size and arr.max() <= 1.0 else 255.0
        arr8 = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    return img.convert("RGB")


def open_image(path) -> Image.Image:
    found = indexed(path)
    if found is not None:
        return to_rgb(found[0].open_row(found[1]))
    shard, member = split(path)
    if member is None:
        with Image.open(shard) as img:
            return to_rgb(img)
    tf, members = _tar(shard)
    with Image.open(io.BytesIO(tf.extractfile(members[member]).read())) as img:
        return to_rgb(img)


def source_stamp(source: IndexedSource) -> str:
    key = (os.getpid(), source.key())
    if key not in _stamps:
        _stamps[key] = source.stamp()
    return _stamps[key]


def identity(path) -> str:
    """Name and size (of the member, for a tar; the source's content stamp and the row, for an indexed
    source): what the data fingerprints are built from."""
    found = indexed(path)
    if found is not None:
        return f"{source_stamp(found[0])}|{found[1]}"
    shard, member = split(path)
    if member is None:
        return f"{shard.name}|{shard.stat().st_size}"
    return f"{shard.name}{SEP}{member}|{_tar(shard)[1][member].size}"

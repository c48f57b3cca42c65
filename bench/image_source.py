"""Where an image's bytes live: a plain file, or a member of a webdataset tar shard.

A tar member is addressed as ``/path/shard.tar::member.jpg`` so that the rest of the pipeline (file
lists, fingerprints, the feature cache) treats both alike. Each process keeps its open shards and
their member index, so reading N images from a shard costs one header scan, not N.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

SEP = "::"
_open_tars: dict[str, tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]] = {}


def split(path) -> tuple[Path, str | None]:
    text = str(path)
    if SEP in text:
        shard, member = text.split(SEP, 1)
        return Path(shard), member
    return Path(text), None


def _tar(shard: Path):
    key = str(shard)
    if key not in _open_tars:
        tf = tarfile.open(shard)
        _open_tars[key] = (tf, {m.name: m for m in tf.getmembers() if m.isfile()})
    return _open_tars[key]


def open_image(path) -> Image.Image:
    shard, member = split(path)
    if member is None:
        with Image.open(shard) as img:
            return img.convert("RGB")
    tf, members = _tar(shard)
    with Image.open(io.BytesIO(tf.extractfile(members[member]).read())) as img:
        return img.convert("RGB")


def identity(path) -> str:
    """Name and size (of the member, for a tar): what the data fingerprints are built from."""
    shard, member = split(path)
    if member is None:
        return f"{shard.name}|{shard.stat().st_size}"
    return f"{shard.name}{SEP}{member}|{_tar(shard)[1][member].size}"

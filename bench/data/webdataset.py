"""Webdataset shards as open_clip, img2dataset and clip_benchmark write them: samples are the tar
members that share a key; images are read in place (``shard.tar::member``), never unpacked."""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import DataError
from bench.data import image_source


def wds_samples(shards: list[Path], fields: tuple[str, ...]):
    """Yield (image address, {field: text}) per sample of webdataset shards, in order.

    A sample is the members sharing a key: one image (webp/png/jpg/jpeg) and the text ``fields``
    (e.g. ``txt`` captions, ``cls`` label), as open_clip, img2dataset and clip_benchmark write them.
    """
    import tarfile

    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise DataError(f"webdataset: {len(missing)} of {len(shards)} shards missing (e.g. {', '.join(missing[:3])}).")
    for shard in shards:
        try:
            with tarfile.open(shard) as tf:
                samples: dict[str, dict[str, tarfile.TarInfo]] = {}
                for m in tf.getmembers():
                    if m.isfile():
                        key, _, ext = m.name.rpartition(".")
                        samples.setdefault(key, {})[ext.lower()] = m
                for key, parts in samples.items():
                    image = next((parts[e] for e in ("webp", "png", "jpg", "jpeg") if e in parts), None)
                    if image is None or any(f not in parts for f in fields):
                        raise DataError(f"webdataset: {shard} sample {key!r} lacks an image or one of {fields}.")
                    if image.size == 0:
                        raise DataError(f"webdataset: {shard} member {image.name} is empty.")
                    try:
                        texts = {f: tf.extractfile(parts[f]).read().decode("utf-8").strip() for f in fields}
                    except UnicodeDecodeError as exc:
                        raise DataError(
                            f"webdataset: {shard} sample {key!r} has text that is not UTF-8 ({exc})."
                        ) from None
                    yield Path(f"{shard}{image_source.SEP}{image.name}"), texts
        except tarfile.TarError as exc:
            raise DataError(f"webdataset: {shard} is not a readable tar ({exc}); it may be truncated.") from None


def clip_benchmark_shards(folder: Path, split: str) -> list[Path] | None:
    """The shards of a dataset exported by clip_benchmark (``SPLIT/nshards.txt`` + ``SPLIT/{0..n-1}.tar``)."""
    count = folder / split / "nshards.txt"
    if not count.is_file():
        return None
    try:
        n = int(count.read_text().strip())
    except ValueError:
        raise DataError(f"{count} must hold the number of shards, got {count.read_text()[:40]!r}.") from None
    return [folder / split / f"{i}.tar" for i in range(n)]


def labelled_samples(name: str, shards: list[Path]) -> tuple[list[str], list[int]]:
    """Image references and integer ``cls`` labels of a classification export, in shard order."""
    paths, labels = [], []
    for path, texts in wds_samples(shards, ("cls",)):
        paths.append(path)
        try:
            labels.append(int(texts["cls"]))
        except ValueError:
            raise DataError(f"{name}: {path} has class label {texts['cls'][:40]!r}, not an integer.") from None
    return paths, labels

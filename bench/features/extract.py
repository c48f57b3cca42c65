"""Backbone point sets for a dataset, through the feature cache.

Images are decoded and preprocessed in DataLoader workers; the forward pass runs under bf16
autocast on a GPU and in float32 on a CPU; a progress bar shows items per second.

An image that cannot be decoded does not stop the pass: its row is left zero and its index is
recorded in the cache manifest, so the suite can refuse the dataset (listing the files) or leave
those images out, and a rerun with ``--skip-corrupt`` reuses the pass instead of repeating it.

Under torchrun each rank extracts a contiguous share of the items and the shares are gathered, so
every rank ends with the whole tensor; rank 0 alone publishes the cache entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from bench.core import distributed
from bench.data import image_source
from bench.features import adapt
from bench.features.adapt import AdaptedPoints
from bench.features.backbone import Backbone
from bench.features.cache import FeatureCache
from bench.features.token_sets import TokenSets

log = logging.getLogger(__name__)

# What PIL raises on a corrupt, truncated or hostile file (UnidentifiedImageError is an OSError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class Extracted:
    points: torch.Tensor | TokenSets  # dense point sets (layers readout), or token sets on disk
    cached: bool  # no forward pass was needed
    corrupt: dict[int, str] = field(default_factory=dict)  # item index -> why it could not be decoded


class ImageFiles(Dataset):
    """Images from file paths, preprocessed by the backbone's own transform; yields (image, error)."""

    def __init__(self, paths: list[str | Path], transform):
        self.paths, self.transform = [str(p) for p in paths], transform
        self.sources = image_source.sources_for(self.paths)  # travel to DataLoader workers with the list

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        image_source.ensure(self.sources)
        try:
            return self.transform(image_source.open_image(self.paths[i])), ""
        except DECODE_ERRORS as exc:  # a blank stand-in keeps the batch shape; the row is zeroed later
            return self.transform(Image.new("RGB", (32, 32))), f"{type(exc).__name__}: {exc}"


def fingerprint_files(paths: list[str | Path], extra: str = "") -> str:
    """Cheap identity of a file list: names, sizes and modification times (of the shard, for a tar member),
    in order. A file replaced in place gets a new mtime, so its features and results are recomputed."""
    h = hashlib.sha256(extra.encode())
    mtimes: dict[Path, int] = {}
    for p in paths:
        if image_source.indexed(p) is not None:  # the source's stamp holds its files' sizes and times
            h.update(f"{image_source.identity(p)}\n".encode())
            continue
        shard, _ = image_source.split(p)
        if shard not in mtimes:
            mtimes[shard] = shard.stat().st_mtime_ns
        h.update(f"{image_source.identity(p)}|{mtimes[shard]}\n".encode())
    return h.hexdigest()[:16]


def fingerprint_texts(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def loader_workers(requested: int) -> int:
    """DataLoader workers: as many as asked, but never more than the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(int(requested), cpus))


def image_batches(
    backbone: Backbone,
    paths,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 256,
    workers: int = 4,
    progress: bool = True,
    read=None,
):
    """Yield (points, undecodable) per batch of images[start:stop]; ``undecodable`` maps a global
    index to why it could not be decoded (its row is zero). ``read`` is the readout (default the
    backbone's ``image_points``); one returning (points, mask) yields ((points, mask), undecodable)."""
    read = read or backbone.image_points
    paths = list(paths)
    stop = len(paths) if stop is None else stop
    loader = DataLoader(
        ImageFiles(paths[start:stop], backbone.preprocess),
        batch_size=batch_size,
        num_workers=loader_workers(workers),
        pin_memory=backbone.device.type == "cuda",
    )
    done = start
    with tqdm(total=stop - start, desc="image features", unit="img", disable=None if progress else True) as bar:
        for images, errors in loader:
            with _autocast(backbone.device):
                out = read(images)
            bad = [j for j, e in enumerate(errors) if e]
            if bad:
                points = (out[0] if isinstance(out, tuple) else out).clone()
                points[bad] = 0
                out = (points, out[1]) if isinstance(out, tuple) else points
            yield out, {done + j: errors[j] for j in bad}
            done += len(images)
            bar.update(len(images))


def text_batches(backbone: Backbone, texts: list[str], batch_size: int = 1024, progress: bool = True, read=None):
    read = read or backbone.text_points
    with tqdm(total=len(texts), desc="text features", unit="txt", disable=None if progress else True) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            with _autocast(backbone.device):
                yield read(backbone.tokenize(chunk))
            bar.update(len(chunk))


def _cached_or_extracted(cache: FeatureCache, fields: dict, n: int, share) -> Extracted:
    """``share(start, stop)`` returns (points, undecodable) for items [start, stop). Under torchrun each
    rank extracts its contiguous share and the shares are gathered; one process is the case of one rank."""

    def build():
        world, rank = distributed.world_size(), distributed.rank()
        per_rank = -(-n // world)
        points, corrupt = share(min(n, rank * per_rank), min(n, (rank + 1) * per_rank))
        points = distributed.gather_rows(points)
        merged = {}
        for part in distributed.gather_objects(corrupt):
            merged.update(part)
        return points, {"corrupt": {str(i): reason for i, reason in sorted(merged.items())}}

    entry = cache.get_or_build(fields, build)
    return Extracted(entry.points, entry.cached, {int(i): why for i, why in entry.extra.get("corrupt", {}).items()})


def _image_share(backbone, paths, **kw):
    def share(start: int, stop: int):
        chunks, corrupt = [], {}
        for points, bad in image_batches(backbone, paths, start, stop, **kw):
            chunks.append(points.detach().float().cpu())
            corrupt.update(bad)
        return (torch.cat(chunks) if chunks else None), corrupt

    return share


def _text_share(backbone, texts, **kw):
    def share(start: int, stop: int):
        chunks = [b.detach().float().cpu() for b in text_batches(backbone, texts[start:stop], **kw)]
        return (torch.cat(chunks) if chunks else None), {}

    return share


def image_points(cache: FeatureCache, backbone: Backbone, dataset: str, split: str, paths, **kw) -> Extracted:
    fields = {
        "backbone": backbone.identity,
        "dataset": dataset,
        "split": split,
        "fingerprint": fingerprint_files(paths),
        "side": "image",
    }
    return _cached_or_extracted(cache, fields, len(paths), _image_share(backbone, paths, **kw))


def text_points(cache: FeatureCache, backbone: Backbone, dataset: str, split: str, texts: list[str], **kw) -> Extracted:
    fields = {
        "backbone": backbone.identity,
        "dataset": dataset,
        "split": split,
        "fingerprint": fingerprint_texts(texts),
        "side": "text",
    }
    return _cached_or_extracted(cache, fields, len(texts), _text_share(backbone, texts, **kw))


# -- the tokens readout: every token, float16, streamed to disk (bench/features/token_sets.py) --------------
def token_fields(backbone: Backbone, dataset: str, split: str, fingerprint: str, side: str) -> dict:
    """The cache key of token sets: the backbone without its layer count (it does not change the last
    block's tokens), the readout, and the data."""
    identity = {k: v for k, v in backbone.identity.items() if k != "layers"}
    return {
        "backbone": identity,
        "readout": "tokens",
        "dataset": dataset,
        "split": split,
        "fingerprint": fingerprint,
        "side": side,
    }


def image_token_sets(cache: FeatureCache, backbone: Backbone, dataset: str, split: str, paths, **kw) -> Extracted:
    def stream(writer, start: int, stop: int) -> dict:
        corrupt = {}
        for (points, mask), bad in image_batches(backbone, paths, start, stop, read=backbone.image_tokens, **kw):
            writer.append(points, mask)
            corrupt.update(bad)  # global indices
        return {"corrupt": {str(i): why for i, why in sorted(corrupt.items())}}

    fields = token_fields(backbone, dataset, split, fingerprint_files(paths), "image")
    sets, cached, extra = cache.get_or_build_tokens(fields, len(paths), stream)
    return Extracted(sets, cached, {int(i): why for i, why in extra.get("corrupt", {}).items()})


def text_token_sets(
    cache: FeatureCache, backbone: Backbone, dataset: str, split: str, texts: list[str], **kw
) -> Extracted:
    def stream(writer, start: int, stop: int) -> dict:
        for points, mask in text_batches(backbone, texts[start:stop], read=backbone.text_tokens, **kw):
            writer.append(points, mask)
        return {}

    fields = token_fields(backbone, dataset, split, fingerprint_texts(texts), "text")
    sets, cached, _ = cache.get_or_build_tokens(fields, len(texts), stream)
    return Extracted(sets, cached)


# -- train.encoder: the frozen prefix of both towers, streamed to disk like token sets (bench/features/adapt.py)
def _frozen_for(slot, readout: str) -> int:
    return slot.adapter.pristine.image.frozen_points(readout)


def _adapted(slot, sets: TokenSets, side: str, readout: str) -> AdaptedPoints:
    backbone = slot.adapter.backbone
    return AdaptedPoints(sets, side, slot, readout, backbone.layers, backbone.embed_dim)


def image_prefix_sets(cache: FeatureCache, slot, dataset: str, split: str, paths, readout: str, **kw) -> Extracted:
    """Every image's hidden states at the input of the first trainable block (and the frozen pooled tokens
    its readout needs), cached; points are made from them by the slot's towers, a batch at a time."""
    frozen = _frozen_for(slot, readout)
    adapter = slot.adapter
    read = lambda images: adapter.image_prefix(images, frozen)  # noqa: E731 (the readout image_batches runs)

    def stream(writer, start: int, stop: int) -> dict:
        corrupt = {}
        for (sets, mask), bad in image_batches(adapter.backbone, paths, start, stop, read=read, **kw):
            writer.append(sets, mask)
            corrupt.update(bad)
        return {"corrupt": {str(i): why for i, why in sorted(corrupt.items())}}

    fields = adapt.prefix_fields(adapter, dataset, split, fingerprint_files(paths), "image", frozen)
    sets, cached, extra = cache.get_or_build_tokens(fields, len(paths), stream)
    corrupt = {int(i): why for i, why in extra.get("corrupt", {}).items()}
    return Extracted(_adapted(slot, sets, "image", readout), cached, corrupt)


def text_prefix_sets(
    cache: FeatureCache, slot, dataset: str, split: str, texts: list[str], readout: str, **kw
) -> Extracted:
    frozen = _frozen_for(slot, readout)
    adapter = slot.adapter
    read = lambda tokens: adapter.text_prefix(tokens, frozen)  # noqa: E731

    def stream(writer, start: int, stop: int) -> dict:
        for sets, mask in text_batches(adapter.backbone, texts[start:stop], read=read, **kw):
            writer.append(sets, mask)
        return {}

    fields = adapt.prefix_fields(adapter, dataset, split, fingerprint_texts(texts), "text", frozen)
    sets, cached, _ = cache.get_or_build_tokens(fields, len(texts), stream)
    return Extracted(_adapted(slot, sets, "text", readout), cached)

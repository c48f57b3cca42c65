"""Backbone point sets for a dataset, through the feature cache.

Images are decoded and preprocessed in DataLoader workers; the forward pass runs under bf16
autocast on a GPU and in float32 on a CPU; a progress bar shows items per second.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from bench import image_source
from bench.backbone import Backbone
from bench.feature_cache import FeatureCache


class ImageFiles(Dataset):
    """Images from file paths, preprocessed by the backbone's own transform."""

    def __init__(self, paths: list[str | Path], transform):
        self.paths, self.transform = [str(p) for p in paths], transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(image_source.open_image(self.paths[i]))


def fingerprint_files(paths: list[str | Path], extra: str = "") -> str:
    """Cheap identity of a file list: names and sizes (plus mtimes for plain files), in order."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        shard, member = image_source.split(p)
        mtime = "" if member is not None else f"|{shard.stat().st_mtime_ns}"
        h.update(f"{image_source.identity(p)}{mtime}\n".encode())
    return h.hexdigest()[:16]


def fingerprint_texts(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def image_batches(backbone: Backbone, paths, batch_size: int = 256, workers: int = 4, progress: bool = True):
    loader = DataLoader(ImageFiles(paths, backbone.preprocess), batch_size=batch_size, num_workers=workers,
                        pin_memory=backbone.device.type == "cuda")
    with tqdm(total=len(paths), desc="image features", unit="img", disable=None if progress else True) as bar:
        for images in loader:
            with _autocast(backbone.device):
                yield backbone.image_points(images)
            bar.update(len(images))


def text_batches(backbone: Backbone, texts: list[str], batch_size: int = 1024, progress: bool = True):
    with tqdm(total=len(texts), desc="text features", unit="txt", disable=None if progress else True) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            with _autocast(backbone.device):
                yield backbone.text_points(backbone.tokenize(chunk))
            bar.update(len(chunk))


def image_points(cache: FeatureCache, backbone: Backbone, dataset: str, split: str, paths, **kw):
    fields = {"backbone": backbone.identity, "dataset": dataset, "split": split,
              "fingerprint": fingerprint_files(paths), "side": "image"}
    return cache.get_or_build(fields, lambda: image_batches(backbone, paths, **kw))


def text_points(cache: FeatureCache, backbone: Backbone, dataset: str, split: str, texts: list[str], **kw):
    fields = {"backbone": backbone.identity, "dataset": dataset, "split": split,
              "fingerprint": fingerprint_texts(texts), "side": "text"}
    return cache.get_or_build(fields, lambda: text_batches(backbone, texts, **kw))

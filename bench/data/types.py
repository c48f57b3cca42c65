"""Data types shared by the readers of this room (clip_benchmark layouts, webdataset, Hugging Face), so
no reader imports another for a type."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import DataError
from bench.data import image_source


@dataclass
class RetrievalSet:
    name: str
    split: str
    image_paths: list[Path]
    captions: list[str]
    caption_image: list[int]  # for each caption, the index of its image

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.name}|{self.split}".encode())
        for p in self.image_paths:
            h.update(f"{image_source.identity(p)}\n".encode())
        h.update("\n".join(self.captions).encode())
        h.update(",".join(map(str, self.caption_image)).encode())
        return h.hexdigest()[:16]

    def validate(self) -> RetrievalSet:
        """A set that every metric is defined on: images, each with at least one caption."""
        label = f"{self.name} ({self.split} split)"
        if not self.image_paths or not self.captions:
            raise DataError(
                f"{label} is empty: {len(self.image_paths)} images, {len(self.captions)} captions. "
                "Point the data root at a complete copy of the dataset."
            )
        counts = [0] * len(self.image_paths)
        for i in self.caption_image:
            counts[i] += 1
        bare = [str(self.image_paths[i]) for i, c in enumerate(counts) if c == 0]
        if bare:
            raise DataError(
                f"{label}: {len(bare)} of {len(self.image_paths)} images have no caption (e.g. "
                f"{', '.join(bare[:3])}); an image without a caption can never be retrieved. Add their "
                "captions or remove them from the annotation file."
            )
        return self

"""What the real-data suites share: backbone, feature cache, data root, and the training pairs.

Every head of every real suite trains on the same point sets of the same image-caption pairs
(default: the COCO Karpathy train split, every caption with its image), so that retrieval and
classification differ only in how they test.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from bench import features, retrieval_data
from bench.backbone import Backbone, BackboneSpec
from bench.feature_cache import FeatureCache
from suites.base import PointSets, Suite


class BackboneSuite(Suite):
    non_protocol_params = ("data_root", "cache_dir", "batch_size", "text_batch_size", "workers")

    def roots(self) -> tuple[Path, Path]:
        p = self.params
        root = Path(p["data_root"] or os.environ.get("SIMBENCH_DATA") or "data")
        cache = p["cache_dir"] or os.environ.get("SIMBENCH_CACHE") or Path.home() / ".cache" / "simbench" / "features"
        return root, Path(cache)  # never inside the data root, which may be read-only or shared

    def backbone(self, seed: int) -> Backbone:
        return Backbone(BackboneSpec.parse(self.params["backbone"]), self.params["layers"], self.device, seed)

    def cache(self) -> FeatureCache:
        return FeatureCache(self.roots()[1])

    def image_points(self, backbone, cache, name: str, split: str, paths):
        kw = {"batch_size": self.params["batch_size"], "workers": self.params["workers"]}
        return features.image_points(cache, backbone, name, split, paths, **kw)[0]

    def text_points(self, backbone, cache, name: str, split: str, texts):
        return features.text_points(cache, backbone, name, split, texts, batch_size=self.params["text_batch_size"])[0]

    def train_set(self) -> retrieval_data.RetrievalSet:
        """Validated before any backbone work, like every test set."""
        return retrieval_data.load(self.roots()[0], self.params["train_dataset"], self.params["train_split"])

    def train_pairs(self, train: retrieval_data.RetrievalSet, backbone, cache) -> PointSets:
        img = self.image_points(backbone, cache, train.name, train.split, train.image_paths)
        txt = self.text_points(backbone, cache, train.name, train.split, train.captions)
        return PointSets(img, txt, image_of_pair=torch.tensor(train.caption_image, dtype=torch.long))

    @staticmethod
    def train_identity(train: retrieval_data.RetrievalSet) -> dict:
        return {"dataset": train.name, "split": train.split, "pairs": len(train.captions),
                "fingerprint": train.fingerprint()}

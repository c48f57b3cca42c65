"""Retrieval suite: MSCOCO 5k and Flickr30k 1k (Karpathy test splits), recall@1/5/10 both ways.

Heads train on backbone point sets of the training captions (default: COCO Karpathy train, every
caption paired with its image) and are scored on each test set through their own ``score()``.
Text->image has one positive per caption; image->text counts a hit when any of the image's
captions is in the top k, as clip_benchmark does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import features, metrics, retrieval_data
from bench.backbone import Backbone, BackboneSpec
from bench.feature_cache import FeatureCache
from bench.scoring import encode, score_matrix
from suites.base import PointSets, Suite, SuiteData, register_suite

DATASETS = ("mscoco_captions", "flickr30k")
KS = (1, 5, 10)


def _metric_names(ds: str) -> dict[str, bool]:
    names = {f"{ds}/{d}_retrieval_recall@{k}": True for d in ("image", "text") for k in KS}
    names[f"{ds}/recall_sum"] = True
    return names


@dataclass
class RetrievalTest:
    images: torch.Tensor
    texts: torch.Tensor
    caption_image: torch.Tensor


@register_suite("retrieval")
class RetrievalSuite(Suite):
    version = 1
    description = "MSCOCO 5k / Flickr30k 1k image-text retrieval on cached open_clip point sets."
    main_metric = "mscoco_captions/recall_sum"
    metrics = {name: up for ds in DATASETS for name, up in _metric_names(ds).items()}
    headline_metrics = ("mscoco_captions/text_retrieval_recall@1", "mscoco_captions/image_retrieval_recall@1",
                        "flickr30k/text_retrieval_recall@1")
    defaults_file = "retrieval.yaml"
    non_protocol_params = ("data_root", "cache_dir", "batch_size", "text_batch_size", "workers")

    def _roots(self) -> tuple[Path, Path]:
        p = self.params
        root = Path(p["data_root"] or os.environ.get("SIMBENCH_DATA") or "data")
        cache = p["cache_dir"] or os.environ.get("SIMBENCH_CACHE") or Path.home() / ".cache" / "simbench" / "features"
        return root, Path(cache)  # never inside the data root, which may be read-only or shared

    def build(self, seed: int) -> SuiteData:
        p = self.params
        root, cache_dir = self._roots()
        unknown = [d for d in p["datasets"] if d not in retrieval_data.DATASETS]
        if unknown:
            retrieval_data.load(root, unknown[0], p["test_split"])  # raises with suggestions
        # Validate every dataset before any backbone work: a missing one fails in seconds.
        tests = {d: retrieval_data.load(root, d, p["test_split"]) for d in p["datasets"]}
        train = retrieval_data.load(root, p["train_dataset"], p["train_split"])
        backbone = Backbone(BackboneSpec.parse(p["backbone"]), p["layers"], self.device, seed)
        cache = FeatureCache(cache_dir)
        img_kw = {"batch_size": p["batch_size"], "workers": p["workers"]}
        txt_kw = {"batch_size": p["text_batch_size"]}

        def points(ds: retrieval_data.RetrievalSet):
            img, _ = features.image_points(cache, backbone, ds.name, ds.split, ds.image_paths, **img_kw)
            txt, _ = features.text_points(cache, backbone, ds.name, ds.split, ds.captions, **txt_kw)
            return img, txt, torch.tensor(ds.caption_image, dtype=torch.long)

        tr_img, tr_txt, tr_map = points(train)
        test = {}
        for name, ds in tests.items():
            img, txt, cap = points(ds)
            test[name] = RetrievalTest(img, txt, cap)
        identity = {"backbone": backbone.identity,
                    "datasets": {n: {"split": ds.split, "images": len(ds.image_paths), "captions": len(ds.captions),
                                     "fingerprint": ds.fingerprint()} for n, ds in tests.items()},
                    "train": {"dataset": train.name, "split": train.split, "pairs": len(train.captions),
                              "fingerprint": train.fingerprint()}}
        dim = tr_img.shape[-1]
        return SuiteData(PointSets(tr_img, tr_txt, image_of_pair=tr_map), dim, tr_txt.shape[-1], test, identity)

    def evaluate(self, head, data: SuiteData, device) -> dict[str, float]:
        out = {}
        head.eval()
        for name, t in data.test.items():
            img = encode(head, "image", t.images, None, device)
            txt = encode(head, "text", t.texts, None, device)
            scores = score_matrix(head, img, txt, len(t.images), len(t.texts)).cpu()
            positives = torch.zeros_like(scores, dtype=torch.bool)
            positives[t.caption_image, torch.arange(len(t.texts))] = True
            recalls = metrics.retrieval_recalls(scores, positives, KS)
            out.update({f"{name}/{k}": v for k, v in recalls.items()})
            out[f"{name}/recall_sum"] = sum(recalls.values())
        return out

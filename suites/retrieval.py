"""Retrieval suite: MSCOCO 5k and Flickr30k 1k (Karpathy test splits), recall@1/5/10 both ways.

Heads train on backbone point sets of the training captions (default: COCO Karpathy train, every
caption paired with its image) and are scored on each test set through their own ``score()``.
Text->image has one positive per caption; image->text counts a hit when any of the image's
captions is in the top k, as clip_benchmark does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data import retrieval_data
from bench.eval import metrics, uncertainty
from bench.eval.scoring import encode, score_matrices
from suites.backbone_suite import BackboneSuite
from suites.base import Evaluation, ReportTable, SuiteData, register_suite

DATASETS = ("mscoco_captions", "flickr30k")
KS = (1, 5, 10)


def _metric_names(ds: str) -> dict[str, bool]:
    names = {f"{ds}/{d}_retrieval_recall@{k}": True for d in ("image", "text") for k in KS}
    names[f"{ds}/recall_sum"] = True
    return names


def _report_table(ds: str) -> ReportTable:
    """The shape retrieval papers use: image-to-text R@1/5/10, text-to-image R@1/5/10, RSUM."""
    cols = [(f"I→T R@{k}", f"{ds}/text_retrieval_recall@{k}") for k in KS]
    cols += [(f"T→I R@{k}", f"{ds}/image_retrieval_recall@{k}") for k in KS] + [("RSUM", f"{ds}/recall_sum")]
    return ReportTable(
        ds,
        tuple(cols),
        "I→T: an image queries the captions (a hit if any of its ~5 captions is in "
        "the top k); T→I: a caption queries the images; R@k: recall at k; RSUM: the sum of the six.",
    )


# i2t: an image queries the captions; t2i: a caption queries the images. The resampling unit is the
# image: an image's captions are drawn with it (they are not independent queries).
RETRIEVAL_SPEC = {
    **{f"text_retrieval_recall@{k}": {"kind": "hit", "query": "i2t", "k": k} for k in KS},
    **{f"image_retrieval_recall@{k}": {"kind": "hit", "query": "t2i", "k": k} for k in KS},
    "recall_sum": {"kind": "sum", "of": [f"{d}_retrieval_recall@{k}" for d in ("text", "image") for k in KS]},
}


def retrieval_outcomes(
    i2t: torch.Tensor, t2i: torch.Tensor, positives: torch.Tensor, caption_image: torch.Tensor
) -> dict:
    """Both directions' first-positive ranks, each from its own matrix; a caption's unit is its image."""
    out = {f"i2t/{k}": v for k, v in uncertainty.rank_outcomes(i2t, positives).items()}
    out.update({f"t2i/{k}": v for k, v in uncertainty.rank_outcomes(t2i.T, positives.T).items()})
    out["t2i/unit"] = caption_image.cpu().numpy().astype("int32")
    out["t2i/n_units"] = i2t.shape[0]
    return out


@dataclass
class RetrievalTest:
    images: torch.Tensor
    texts: torch.Tensor
    caption_image: torch.Tensor


@register_suite("retrieval")
class RetrievalSuite(BackboneSuite):
    version = (
        2  # 2: heads train on pairs minus a validation hold-out (or beside COCO Karpathy val), early-stopped on it
    )
    description = "MSCOCO 5k / Flickr30k 1k image-text retrieval on cached open_clip point sets."
    main_metric = "mscoco_captions/recall_sum"
    metrics = {name: up for ds in DATASETS for name, up in _metric_names(ds).items()}
    headline_metrics = (
        "mscoco_captions/text_retrieval_recall@1",
        "mscoco_captions/image_retrieval_recall@1",
        "flickr30k/text_retrieval_recall@1",
    )
    summary_metrics = tuple(f"{ds}/recall_sum" for ds in DATASETS)
    report_tables = tuple(_report_table(ds) for ds in DATASETS)
    defaults_file = "retrieval.yaml"
    known_datasets = DATASETS

    def load_test_set(self, root, name: str) -> retrieval_data.RetrievalSet:
        return retrieval_data.load(root, name, self.params["test_split"], self.source(name), self.columns())

    def build_readout(self, backbone, cache, tests: dict, train, readout: str) -> SuiteData:
        pairs = self.train_pairs(train, backbone, cache, readout)
        test = {}
        for name, ds in tests.items():
            images, keep = self.image_points(backbone, cache, name, ds.split, ds.image_paths, readout)
            texts = self.text_points(backbone, cache, name, ds.split, ds.captions, readout)
            caption_image = torch.tensor(ds.caption_image, dtype=torch.long)
            kept_captions = keep[caption_image]  # a left-out image takes its captions with it
            new_index = torch.cumsum(keep, 0) - 1
            test[name] = RetrievalTest(images[keep], texts[kept_captions], new_index[caption_image[kept_captions]])
        datasets = {
            n: {"split": ds.split, "images": len(t.images), "captions": len(t.texts), "fingerprint": ds.fingerprint()}
            for (n, ds), t in zip(tests.items(), test.values())
        }
        return self.suite_data(backbone, train, pairs, test, datasets)

    def evaluate_dataset(self, head, image_rep, t: RetrievalTest, device) -> Evaluation:
        txt = encode(head, "text", t.texts, None, device)
        i2t, t2i = (m.cpu() for m in score_matrices(head, image_rep, txt, len(t.images), len(t.texts)))
        positives = torch.zeros_like(i2t, dtype=torch.bool)
        positives[t.caption_image, torch.arange(len(t.texts))] = True
        recalls = metrics.retrieval_recalls(i2t, positives, KS, t2i=t2i)
        return Evaluation(
            {**recalls, "recall_sum": sum(recalls.values())},
            retrieval_outcomes(i2t, t2i, positives, t.caption_image),
            RETRIEVAL_SPEC,
        )

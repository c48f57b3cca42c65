"""Zero-shot classification on ImageNet and its variants, with clip_benchmark's class names and templates.

A class is represented by ``head.combine_prompts`` over its prompt representations (for KME heads
the exact mean embedding of the prompts; for cosine CLIP's mean of unit embeddings). Reported per
dataset: acc@1, acc@5 and mean per-class recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data import classification_data
from bench.eval import metrics, uncertainty
from bench.eval.scoring import encode, score_matrix
from suites.backbone_suite import BackboneSuite
from suites.base import Evaluation, ReportTable, SuiteData, register_suite

DATASETS = ("imagenet1k", "imagenetv2", "imagenet-r", "imagenet-a", "imagenet_sketch", "objectnet")


def class_evaluation(
    logits: torch.Tensor, labels: torch.Tensor, n_classes: int, prefix: str = "", query: str = "cls", top5: bool = True
) -> Evaluation:
    """acc@1, acc@5 (when ``top5``) and mean per-class recall of ``[samples, classes]`` logits, with each
    sample's rank of its true class (ties exact) as the outcome: the resampling unit is the sample.
    Shared by zero-shot classification and the linear probe (``prefix`` "lp_", ``query`` "lp")."""
    acc = metrics.topk_accuracy(logits, labels, ks=(1, 5))
    truth = torch.zeros_like(logits, dtype=torch.bool)
    truth[torch.arange(len(labels)), labels] = True
    outcomes = {f"{query}/{k}": v for k, v in uncertainty.rank_outcomes(logits, truth).items()}
    outcomes[f"{query}/label"] = labels.cpu().numpy().astype("int32")
    values = {
        f"{prefix}acc1": acc[1],
        f"{prefix}acc5": acc[5] if top5 else float("nan"),
        f"{prefix}mean_per_class_recall": metrics.mean_per_class_recall(logits, labels, n_classes),
    }
    spec = {
        f"{prefix}acc1": {"kind": "hit", "query": query, "k": 1},
        **({f"{prefix}acc5": {"kind": "hit", "query": query, "k": 5}} if top5 else {}),
        f"{prefix}mean_per_class_recall": {"kind": "balanced_hit", "query": query, "k": 1, "labels": f"{query}/label"},
    }
    return Evaluation(values, outcomes, spec)


@dataclass
class ClassificationTest:
    images: torch.Tensor
    labels: torch.Tensor
    prompts: torch.Tensor
    n_classes: int
    n_templates: int


@register_suite("classification")
class ClassificationSuite(BackboneSuite):
    version = (
        2  # 2: heads train on pairs minus a validation hold-out (or beside COCO Karpathy val), early-stopped on it
    )
    description = "Zero-shot ImageNet / V2 / R / A / Sketch / ObjectNet on cached open_clip point sets."
    main_metric = "imagenet1k/acc1"
    metrics = {f"{d}/{m}": True for d in DATASETS for m in ("acc1", "acc5", "mean_per_class_recall")}
    headline_metrics = ("imagenet1k/acc1", "imagenetv2/acc1", "imagenet-r/acc1")
    summary_metrics = tuple(f"{d}/acc1" for d in DATASETS)
    report_tables = tuple(
        ReportTable(title, tuple((d, f"{d}/{m}") for d in DATASETS), legend)
        for title, m, legend in [
            ("zero-shot top-1 accuracy", "acc1", "Columns are datasets."),
            ("zero-shot top-5 accuracy", "acc5", "Columns are datasets."),
            (
                "mean per-class recall",
                "mean_per_class_recall",
                "Columns are datasets; balanced accuracy, as clip_benchmark.",
            ),
        ]
    )
    defaults_file = "classification.yaml"
    known_datasets = DATASETS

    def load_test_set(self, root, name: str) -> classification_data.ClassificationSet:
        return classification_data.load(root, name, self.source(name), self.columns())

    def build_readout(self, backbone, cache, sets: dict, train, readout: str) -> SuiteData:
        pairs = self.train_pairs(train, backbone, cache, readout)
        test = {}
        for name, ds in sets.items():
            images, keep = self.image_points(backbone, cache, name, "test", ds.image_paths, readout)
            test[name] = ClassificationTest(
                images[keep],
                torch.tensor(ds.labels, dtype=torch.long)[keep],
                self.text_points(backbone, cache, name, "prompts", ds.prompts(), readout),
                len(ds.classnames),
                len(ds.templates),
            )
        datasets = {
            n: {
                "images": len(test[n].images),
                "classes": len(ds.classnames),
                "templates": len(ds.templates),
                "fingerprint": ds.fingerprint(),
            }
            for n, ds in sets.items()
        }
        return self.suite_data(backbone, train, pairs, test, datasets)

    def evaluate_dataset(self, head, image_rep, t: ClassificationTest, device) -> Evaluation:
        classes = head.combine_prompts(encode(head, "text", t.prompts, None, device), t.n_classes, t.n_templates)
        logits = score_matrix(head, image_rep, classes, len(t.images), t.n_classes).cpu()
        return class_evaluation(logits, t.labels, t.n_classes)

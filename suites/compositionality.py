"""Compositionality: does a head prefer the true caption over a minimally changed one?

Every head first trains on the same image-caption pairs as in the retrieval suite. Then:
- **SugarCrepe** (replace/swap/add x object/attribute/relation): each image chooses between its
  true caption and a hard negative. Metric ``acc``: the share of images whose true caption scores
  higher. Ties count as a coin flip (one half), as recall counts them, so a head with constant
  scores gets chance, not a perfect score. clip_benchmark's argmax picks the first caption, the true
  one, on a tie.
- **ARO** VG-Relation and VG-Attribution: each image, cropped to its box as ARO crops it, chooses between
  its true caption and the false one (objects or attributes swapped). ``acc`` over every case, ties one
  half; ``macro_acc``, ARO's number: the mean over relations (attribute pairs) of their accuracy, leaving
  out the symmetric relations and the attribute pairs with fewer than 25 cases, as ARO's notebook does.
  ARO's argmax counts a tie as a failure (the false caption comes first there).
- **Winoground**: two images, two captions. ``text_score``: both images score their own caption
  above the other; ``image_score``: both captions score their own image above the other;
  ``group_score``: both. These use strict ``>`` (Winoground's definition), so a tie fails.
``sugarcrepe_average/acc`` pools every SugarCrepe instance of the run (a micro-average, with its own
interval).

Scoring goes through each head's own ``score``, and ``score_directions`` where the two differ: an
image choosing a caption uses image-to-text scores, a caption choosing an image text-to-image scores.
Instances are scored in blocks of 256, each image against its own instance's captions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.data import selection_data
from bench.eval import uncertainty
from bench.eval.scoring import encode, rows_of, score_matrices
from suites.backbone_suite import BackboneSuite
from suites.base import Evaluation, ReportTable, SuiteData, register_suite

SUGARCREPE = tuple(f"sugarcrepe_{t}" for t in selection_data.SUGARCREPE_TASKS)
ARO = tuple(f"aro_vg_{t}" for t in selection_data.ARO_TASKS)
DATASETS = (*SUGARCREPE, *ARO, "winoground")
AVERAGE = "sugarcrepe_average"
WINOGROUND_METRICS = ("text_score", "image_score", "group_score")
BLOCK = 256  # instances scored together: [256 I, 256 C] pairs, of which only each instance's own are read


@dataclass
class SelectionTest:
    images: object  # points (a tensor, or token sets on disk), one row per image
    texts: object
    instance_images: torch.Tensor  # [n, I] rows of ``images``; image k goes with caption k
    instance_captions: torch.Tensor  # [n, C] rows of ``texts``
    groups: torch.Tensor | None = None  # [n] ARO's group of each instance; -1: left out of its macro accuracy


def _metrics() -> dict[str, bool]:
    out = {f"{d}/acc": True for d in SUGARCREPE}
    out[f"{AVERAGE}/acc"] = True
    out.update({f"{d}/{m}": True for d in ARO for m in ("macro_acc", "acc")})
    out.update({f"winoground/{m}": True for m in WINOGROUND_METRICS})
    return out


@register_suite("compositionality")
class CompositionalitySuite(BackboneSuite):
    version = 2  # 2: ARO's VG-Relation and VG-Attribution
    description = "SugarCrepe, ARO and Winoground: the true caption against minimally changed ones."
    main_metric = f"{AVERAGE}/acc"
    metrics = _metrics()
    headline_metrics = (f"{AVERAGE}/acc", "winoground/group_score")
    summary_metrics = (
        f"{AVERAGE}/acc",
        *(f"{d}/macro_acc" for d in ARO),
        "winoground/text_score",
        "winoground/image_score",
        "winoground/group_score",
    )
    report_tables = (
        ReportTable(
            "SugarCrepe",
            tuple((d[len("sugarcrepe_") :], f"{d}/acc") for d in SUGARCREPE) + (("average", f"{AVERAGE}/acc"),),
            "Accuracy of ranking the true caption above its hard negative; ties count one half. average: "
            "every instance of the run pooled.",
        ),
        ReportTable(
            "ARO",
            tuple((f"{d[len('aro_vg_') :]} {m}", f"{d}/{m}") for d in ARO for m in ("macro_acc", "acc")),
            "macro_acc: ARO's number, the mean over relations (attribute pairs) of their accuracy, without the "
            "symmetric relations and the pairs with fewer than 25 cases; acc: every case; ties count one half.",
        ),
        ReportTable(
            "Winoground",
            tuple((m.split("_")[0], f"winoground/{m}") for m in WINOGROUND_METRICS),
            "text: both images prefer their own caption; image: both captions prefer their own image; group: "
            "both (strict >).",
        ),
    )
    defaults_file = "compositionality.yaml"
    known_datasets = DATASETS

    def load_test_set(self, root, name: str) -> selection_data.SelectionSet:
        return selection_data.load(root, name, self.source(name))

    def build_readout(self, backbone, cache, tests: dict, train, readout: str) -> SuiteData:
        pairs = self.train_pairs(train, backbone, cache, readout)
        test, datasets = {}, {}
        for name, ds in tests.items():
            images, keep = self.image_points(backbone, cache, name, ds.split, ds.image_paths, readout)
            texts = self.text_points(backbone, cache, name, ds.split, ds.captions, readout)
            kept = [
                k for k, inst in enumerate(ds.instances) if all(keep[i] for i in inst[0])
            ]  # a left-out image: its instance
            groups = None
            if ds.groups is not None:
                names = sorted(set(ds.groups))
                groups = torch.tensor([names.index(ds.groups[k]) if ds.in_macro[k] else -1 for k in kept])
            test[name] = SelectionTest(
                images,
                texts,
                torch.tensor([ds.instances[k][0] for k in kept], dtype=torch.long),
                torch.tensor([ds.instances[k][1] for k in kept], dtype=torch.long),
                groups,
            )
            datasets[name] = {"instances": len(kept), "of": len(ds.instances), "fingerprint": ds.fingerprint()}
        return self.suite_data(backbone, train, pairs, test, datasets)

    def diagnostic_points(self, data: SuiteData, n: int = 256):
        return None

    @torch.no_grad()
    def blocks(self, head, t: SelectionTest, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each instance's own scores, ``[n, I, C]`` image-to-text and text-to-image."""
        n, i_per, c_per = len(t.instance_images), t.instance_images.shape[1], t.instance_captions.shape[1]
        i2t, t2i = [], []
        for start in range(0, n, BLOCK):
            rows = slice(start, min(start + BLOCK, n))
            b = rows.stop - rows.start
            img = encode(head, "image", *rows_of(t.images, None, t.instance_images[rows].flatten(), device), device)
            txt = encode(head, "text", *rows_of(t.texts, None, t.instance_captions[rows].flatten(), device), device)
            a, z = score_matrices(head, img, txt, b * i_per, b * c_per)
            own = torch.arange(b)
            i2t.append(a.view(b, i_per, b, c_per)[own, :, own, :].cpu())  # [b, I, C]: each instance's own block
            t2i.append(z.view(b, i_per, b, c_per)[own, :, own, :].cpu())
        return torch.cat(i2t), torch.cat(t2i)

    def evaluate(self, head, data: SuiteData, device) -> Evaluation:
        head.eval()
        out, pooled = Evaluation({}), []
        for name, t in data.test.items():
            i2t, t2i = self.blocks(head, t, device)
            if name == "winoground":
                out.merge(winoground_evaluation(i2t, t2i).prefixed(name))
            elif t.groups is not None:  # ARO: not pooled into SugarCrepe's average
                out.merge(aro_evaluation(i2t[:, 0, :], t.groups).prefixed(name))
            else:
                choice = i2t[:, 0, :]  # the image's scores for [true caption, negatives...]
                pooled.append(choice)
                out.merge(choice_evaluation(choice).prefixed(name))
        if pooled:
            width = max(c.shape[1] for c in pooled)
            if all(c.shape[1] == width for c in pooled):
                out.merge(choice_evaluation(torch.cat(pooled)).prefixed(AVERAGE))
        return out


def choice_evaluation(choice: torch.Tensor) -> Evaluation:
    """An image's scores for its captions, the true one first: accuracy of ranking it first, ties one half."""
    positives = torch.zeros_like(choice, dtype=torch.bool)
    positives[:, 0] = True
    outcomes = {f"sel/{k}": v for k, v in uncertainty.rank_outcomes(choice, positives).items()}
    hits = uncertainty.hits(outcomes, "sel", 1)
    return Evaluation({"acc": float(np.mean(hits))}, outcomes, {"acc": {"kind": "hit", "query": "sel", "k": 1}})


def aro_evaluation(choice: torch.Tensor, groups: torch.Tensor) -> Evaluation:
    """``acc`` over every case, and ARO's macro accuracy: the mean over groups (label >= 0) of their accuracy."""
    out = choice_evaluation(choice)
    counted = groups >= 0
    if counted.any():
        positives = torch.zeros_like(choice[counted], dtype=torch.bool)
        positives[:, 0] = True
        macro = {f"macro/{k}": v for k, v in uncertainty.rank_outcomes(choice[counted], positives).items()}
        macro["macro/label"] = groups[counted].numpy().astype("int32")
        hits = uncertainty.hits(macro, "macro", 1)
        labels = macro["macro/label"]
        value = float(np.mean([hits[labels == g].mean() for g in np.unique(labels)]))
        out.merge(
            Evaluation(
                {"macro_acc": value},
                macro,
                # its cases are a subset of acc's, so they are resampled as a test space of their own
                {
                    "macro_acc": {
                        "kind": "balanced_hit",
                        "query": "macro",
                        "k": 1,
                        "labels": "macro/label",
                        "space": "macro",
                    }
                },
            )
        )
    return out


def winoground_evaluation(i2t: torch.Tensor, t2i: torch.Tensor) -> Evaluation:
    """Winoground's text, image and group scores from each instance's [2, 2] blocks (strict >)."""
    text = (i2t[:, 0, 0] > i2t[:, 0, 1]) & (i2t[:, 1, 1] > i2t[:, 1, 0])
    image = (t2i[:, 0, 0] > t2i[:, 1, 0]) & (t2i[:, 1, 1] > t2i[:, 0, 1])
    group = text & image
    tied = (
        (i2t[:, 0, 0] == i2t[:, 0, 1]).int()
        + (i2t[:, 1, 1] == i2t[:, 1, 0]).int()
        + (t2i[:, 0, 0] == t2i[:, 1, 0]).int()
        + (t2i[:, 1, 1] == t2i[:, 0, 1]).int()
    )
    values = {"text_score": text, "image_score": image, "group_score": group}
    outcomes = {f"sel/{m}": v.double().numpy() for m, v in values.items()}
    outcomes["pairs/tied_neg"] = tied.numpy().astype("int32")  # of the 4 comparisons an instance makes
    outcomes["pairs/n_candidates"] = np.asarray(5, dtype=np.int32)  # 4 "negatives": 2 or more tied is a collapse
    spec = {m: {"kind": "mean", "values": f"sel/{m}", "ties": "pairs"} for m in values}
    return Evaluation({m: float(v.double().mean()) for m, v in values.items()}, outcomes, spec)

"""Linear probe: CLIP_benchmark's protocol (bench/eval/linear_probe.py) on each head's image vectors.

Every head first trains on the same image-caption pairs as in the other real-data suites; then its
``embed_image`` gives one vector per image of a dataset's train and test splits (L2-normalised, as
CLIP_benchmark's featurizer does), and a linear classifier is fitted with CLIP_benchmark's
weight-decay sweep on a validation split (carved from train with ``val_proportion``, seeded by the
run seed, or a named ``val_split``). A head without ``embed_image`` (FILIP: no single vector per
image) is recorded as skipped, with the reason, not as failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.core.errors import ConfigError, DataError
from bench.data import probe_data
from bench.eval import linear_probe
from bench.eval.scoring import in_batches
from suites.backbone_suite import BackboneSuite
from suites.base import Evaluation, ReportTable, SuiteData, register_suite
from suites.classification import class_evaluation

DATASETS = tuple(probe_data.LAYOUTS)


def _rows(s: probe_data.LabelledSet) -> list:
    """What a split's rows are: the file's full path, or the source's content stamp and row."""
    from bench.data import image_source

    return [image_source.identity(x) if image_source.indexed(x) is not None else str(x) for x in s.image_paths] + list(
        s.labels
    )


@dataclass
class ProbeSet:
    """A dataset's splits as read (no images decoded): what the data identity and the build need."""

    name: str
    train: probe_data.LabelledSet
    test: probe_data.LabelledSet
    val: probe_data.LabelledSet | None

    @property
    def image_paths(self) -> list:
        return [p for s in self.splits() for p in s.image_paths]

    def splits(self) -> list[probe_data.LabelledSet]:
        return [s for s in (self.train, self.val, self.test) if s is not None]

    def fingerprint(self) -> str:
        return "-".join(s.fingerprint() for s in self.splits())


@dataclass
class ProbeTest:
    train: torch.Tensor | object
    train_labels: torch.Tensor
    test: torch.Tensor | object
    test_labels: torch.Tensor
    val: torch.Tensor | object | None = None
    val_labels: torch.Tensor | None = None

    @property
    def n_classes(self) -> int:
        """Classes over every split: a class whose only training image fell into the carve still has a row."""
        labels = [y for y in (self.train_labels, self.test_labels, self.val_labels) if y is not None and len(y)]
        return max(int(y.max()) for y in labels) + 1


@register_suite("linear_probe")
class LinearProbeSuite(BackboneSuite):
    version = (
        2  # 2: heads train on pairs minus a validation hold-out (or beside COCO Karpathy val), early-stopped on it
    )
    description = "CLIP_benchmark's linear probe (weight-decay sweep) on each head's image vector."
    main_metric = "imagenet1k/lp_acc1"
    metrics = {f"{d}/{m}": True for d in DATASETS for m in ("lp_acc1", "lp_acc5", "lp_mean_per_class_recall")}
    headline_metrics = tuple(f"{d}/lp_acc1" for d in ("imagenet1k", "cifar10", "cifar100"))
    summary_metrics = tuple(f"{d}/lp_acc1" for d in DATASETS)
    report_tables = tuple(
        ReportTable(title, tuple((d, f"{d}/{m}") for d in DATASETS), legend)
        for title, m, legend in [
            (
                "linear-probe top-1 accuracy",
                "lp_acc1",
                "Columns are datasets. The chosen weight decay of each cell "
                "is in its result file (evaluation_details).",
            ),
            (
                "linear-probe top-5 accuracy",
                "lp_acc5",
                "Columns are datasets (empty below 5 classes, as CLIP_benchmark).",
            ),
            (
                "linear-probe mean per-class recall",
                "lp_mean_per_class_recall",
                "Columns are datasets; balanced accuracy.",
            ),
        ]
    )
    defaults_file = "linear_probe.yaml"
    known_datasets = DATASETS

    @classmethod
    def check_params(cls, params: dict, train: dict) -> None:
        super().check_params(params, train)
        p, where = params, "suites.linear_probe"
        rules = [
            ("val_proportion", 0 <= p["val_proportion"] < 1, "a number in [0, 1) (0: no sweep, weight decay 0)"),
            ("fewshot_k", p["fewshot_k"] == -1 or p["fewshot_k"] >= 1, "-1 (every sample) or an integer >= 1"),
            ("epochs", p["epochs"] >= 1, "an integer >= 1"),
            ("lr", p["lr"] > 0, "a number > 0"),
            ("probe_batch_size", p["probe_batch_size"] >= 1, "an integer >= 1"),
            ("train_per_class", p["train_per_class"] >= 0, "an integer >= 0 (0: every training image)"),
        ]
        for key, ok, allowed in rules:
            if not ok:
                raise ConfigError(f"{where}.{key} = {p[key]!r} is out of range: it must be {allowed}.")
        if p["val_split"] in ("test", "train"):
            chosen_on = (
                "the test split, and the final fit would train on it"
                if p["val_split"] == "test"
                else "the training data itself"
            )
            raise ConfigError(
                f"{where}.val_split = {p['val_split']!r}: weight decay would be chosen on {chosen_on}; name a "
                "held-out split (e.g. validation), or leave val_split empty to carve val_proportion from train."
            )
        if p["val_split"] and p["val_proportion"]:
            raise ConfigError(
                f"{where}: val_split {p['val_split']!r} and val_proportion {p['val_proportion']} are both "
                "set; a validation split is named or carved from train, not both (set one to '' or 0)."
            )

    def load_test_set(self, root, name: str) -> ProbeSet:
        p, source = self.params, self.source(name)
        k = p["train_per_class"]

        def split(which: str, per_class: int = 0):
            return probe_data.load_split(root, name, which, source, self.columns(), per_class)

        ps = ProbeSet(name, split("train", k), split("test"), split(p["val_split"]) if p["val_split"] else None)
        self.check_probe_set(ps)
        return ps

    def check_probe_set(self, ps: ProbeSet) -> None:
        """What would make the probe's number meaningless or crash after every head trained, refused now
        (from the labels alone): one class, train and test the same rows, an empty carve, too few shots."""
        p, where = self.params, f"linear_probe dataset {ps.name}"
        for s in (ps.train, ps.test):
            if _rows(s) == _rows(ps.train if s is ps.test else ps.test):
                raise DataError(
                    f"{where}: its train and test splits are the same rows (a single Dataset without splits, or "
                    "one split named twice), so the probe would be scored on its own training data. Give it a "
                    "DatasetDict with train and test splits (or hf:PATH:SPLIT sources that differ)."
                )
        train_y = list(ps.train.labels)
        if ps.val is None and p["val_proportion"] > 0:
            rows, val_rows = linear_probe.validation_split(len(train_y), p["val_proportion"], self.seed)
            if len(val_rows) == 0 or len(rows) == 0:
                raise ConfigError(
                    f"suites.linear_probe.val_proportion = {p['val_proportion']} of {ps.name}'s {len(train_y)} "
                    f"training images leaves {len(rows)} to train on and {len(val_rows)} to validate on; use a "
                    f"proportion from {1 / len(train_y):.3g} to {1 - 1 / len(train_y):.3g} (or 0: no sweep)."
                )
            train_y = [train_y[i] for i in rows.tolist()]
        if len(set(train_y)) < 2:
            raise DataError(
                f"{where}: its training images (after the validation carve) hold {len(set(train_y))} class, so "
                "every head would score 1.0; a probe needs at least 2 classes. Point it at the complete dataset."
            )
        if p["fewshot_k"] > 0:
            counts = {c: train_y.count(c) for c in set(train_y)}
            short = {c: n for c, n in counts.items() if n < p["fewshot_k"]}
            if short:
                c, n = min(short.items(), key=lambda cn: cn[1])
                raise ConfigError(
                    f"suites.linear_probe.fewshot_k = {p['fewshot_k']}, but {len(short)} class(es) of {ps.name} "
                    f"have fewer training images (class {c}: {n}, after the validation carve); lower fewshot_k to "
                    f"at most {min(counts.values())} or use more training data."
                )

    def skip_reason(self, head_cls) -> str | None:
        if not head_cls.has_image_embedding():
            return (
                f"{head_cls.name} has no embed_image (one vector per image), so there is nothing to probe; "
                "see docs/heads.md"
            )
        return None

    def build_readout(self, backbone, cache, tests: dict, train, readout: str) -> SuiteData:
        pairs = self.train_pairs(train, backbone, cache, readout)
        test, datasets = {}, {}
        for name, ds in tests.items():
            parts = {}
            for s in ds.splits():
                points, keep = self.image_points(backbone, cache, name, s.split, s.image_paths, readout)
                parts[s.split] = (points[keep], torch.tensor(s.labels, dtype=torch.long)[keep])
            val = parts.get(self.params["val_split"]) if ds.val is not None else None
            test[name] = ProbeTest(*parts["train"], *parts["test"], *(val or (None, None)))
            datasets[name] = {
                s.split: {"images": len(parts[s.split][1]), "fingerprint": s.fingerprint(), **s.notes}
                for s in ds.splits()
            }
        return self.suite_data(backbone, train, pairs, test, datasets)

    @torch.no_grad()
    def vectors(self, head, points, device) -> torch.Tensor:
        """The head's image vectors, L2-normalised (CLIP_benchmark's featurizer), on the CPU."""
        return torch.cat(
            in_batches(
                lambda p, m: torch.nn.functional.normalize(head.embed_image(p, m).float(), dim=-1).cpu(),
                points,
                None,
                device,
            )
        )

    def evaluate(self, head, data: SuiteData, device) -> Evaluation:
        head.eval()
        out = Evaluation({})
        for name, t in data.test.items():
            out.merge(self.probe(head, t, device).prefixed(name))
        return out

    def probe(self, head, t: ProbeTest, device) -> Evaluation:
        p = self.params
        train_x, train_y = self.vectors(head, t.train, device), t.train_labels
        if t.val is not None:
            val_x, val_y = self.vectors(head, t.val, device), t.val_labels
        elif p["val_proportion"] > 0:
            rows, val_rows = linear_probe.validation_split(len(train_y), p["val_proportion"], self.seed)
            train_x, train_y, val_x, val_y = train_x[rows], train_y[rows], train_x[val_rows], train_y[val_rows]
        else:
            val_x = val_y = None
        result = linear_probe.evaluate(
            train_x,
            train_y,
            self.vectors(head, t.test, device),
            val_x,
            val_y,
            fewshot_k=p["fewshot_k"],
            n_classes=t.n_classes,
            batch_size=p["probe_batch_size"],
            lr=p["lr"],
            epochs=p["epochs"],
            seed=self.seed,
            device=device,
        )
        logits, labels = result.logits, t.test_labels
        n_classes = t.n_classes
        if logits.shape[1] < n_classes:  # a test class the training split never showed: never predicted
            logits = torch.cat([logits, torch.full((len(logits), n_classes - logits.shape[1]), -math.inf)], 1)
        top5 = int(labels.max()) >= 5  # CLIP_benchmark's condition for reporting acc5
        evaluation = class_evaluation(logits, labels, n_classes, prefix="lp_", query="lp", top5=top5)
        evaluation.details = {
            "weight_decay": result.weight_decay,
            "fits": result.fits,
            "probe_seconds": round(result.seconds, 2),
            "train_images": len(train_y),
            "validation_images": 0 if val_y is None else len(val_y),
            "sweep": [[wd, acc1] for wd, acc1 in result.sweep],
        }
        return evaluation

    def diagnostic_points(self, data: SuiteData, n: int = 256):
        return None

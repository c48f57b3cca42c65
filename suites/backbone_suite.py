"""What the real-data suites share: backbone, feature cache, data root, and the training pairs.

Every head of every real suite trains on the same point sets of the same image-caption pairs
(default: the COCO Karpathy train split, every caption with its image), so that retrieval and
classification differ only in how they test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bench.core import atomic, distributed, environment
from bench.core.errors import ConfigError, DataError
from bench.core.registry import suggest
from bench.data import default_root, image_source, retrieval_data
from bench.eval.scoring import encode, rows_of
from bench.features import adapt, extract
from bench.features.backbone import Backbone, BackboneSpec, weights_identity
from bench.features.cache import FeatureCache
from suites.base import (
    Evaluation,
    PairsValidation,
    PointSets,
    SealedTest,
    Suite,
    SuiteData,
    ValidationSpec,
    as_evaluation,
)

VALIDATION_SOURCES = ("auto", "karpathy", "holdout")


class CorruptImages(DataError):
    """Images that exist but cannot be decoded; the message lists them."""


def corrupt_message(name: str, split: str, n_images: int, files: dict[str, str], limit: int = 20) -> str:
    lines = [f"  {f} ({why})" for f, why in list(files.items())[:limit]]
    if len(files) > limit:
        lines.append(f"  ... and {len(files) - limit} more")
    return (
        f"{name}/{split}: {len(files)} of {n_images} images could not be decoded:\n"
        + "\n".join(lines)
        + "\nReplace them with intact copies, or pass --skip-corrupt (suite option skip_corrupt: true) to leave "
        "them out; the files left out are recorded in the result file. The other images' features are cached, "
        "so that rerun does no forward pass."
    )


class BackboneSuite(Suite):
    non_protocol_params = ("data_root", "cache_dir", "batch_size", "text_batch_size", "workers")
    COLUMN_OPTIONS = ("image_column", "caption_column", "label_column")
    known_datasets: tuple[str, ...] = ()
    # Heads train on pairs, so every real suite selects (early stopping, tuning) on held-out pairs:
    # recall@1/5/10 both ways, summed (0 to 6), on COCO Karpathy val or held-out training images.
    validation = ValidationSpec("recall_sum", higher_is_better=True, tolerance=0.01)
    adapts_encoder = True

    @classmethod
    def check_params(cls, params: dict, train: dict) -> None:
        p, where = params, f"suites.{cls.name}"
        datasets = p["datasets"]
        if not datasets or not all(isinstance(d, str) for d in datasets):
            raise ConfigError(
                f"{where}.datasets = {datasets!r}: name at least one test set, from {', '.join(cls.known_datasets)}."
            )
        for d in datasets:
            if d not in cls.known_datasets:
                raise ConfigError(
                    f"{where}.datasets: unknown dataset {d!r}.{suggest(d, cls.known_datasets)} "
                    f"Known: {', '.join(cls.known_datasets)}."
                )
        if len(set(datasets)) != len(datasets):
            raise ConfigError(f"{where}.datasets = {datasets!r} names a dataset twice; list each once.")
        for d, spec in (p.get("sources") or {}).items():
            if d not in datasets:
                raise ConfigError(
                    f"{where}.sources.{d}: not a dataset of this run ({', '.join(datasets)}); a source "
                    "replaces where a listed dataset is read from."
                )
            if not (isinstance(spec, str) and spec.startswith("hf:") and len(spec) > 3):
                raise ConfigError(
                    f"{where}.sources.{d} = {spec!r}: write hf:PATH_OR_NAME[:SPLIT] (a save_to_disk folder, "
                    "parquet file(s), or a dataset in the local Hugging Face cache)."
                )
        rules = [
            ("layers", p["layers"] >= 1, "an integer >= 1 (points per input: the pooled token at the last L blocks)"),
            ("batch_size", p["batch_size"] >= 1, "an integer >= 1"),
            ("text_batch_size", p["text_batch_size"] >= 1, "an integer >= 1"),
            ("workers", p["workers"] >= 0, "an integer >= 0 (0 decodes images in the main process)"),
            ("validation", p["validation"] in VALIDATION_SOURCES, f"one of {', '.join(VALIDATION_SOURCES)}"),
            ("validation_images", p["validation_images"] >= 1, "an integer >= 1"),
            ("backbone", bool(str(p["backbone"]).strip()), "NAME[:PRETRAINED], e.g. ViT-B-32:openai"),
            (
                "train_dataset",
                bool(str(p["train_dataset"]).strip()),
                "a dataset name, csv:PATH, wds:SHARDS or hf:PATH[:SPLIT]",
            ),
        ]
        for key, ok, allowed in rules:
            if not ok:
                raise ConfigError(f"{where}.{key} = {p[key]!r} is out of range: it must be {allowed}.")

    def __init__(self, params: dict):
        super().__init__(params)
        self.corrupt: dict[str, dict] = {}  # "dataset/split" -> the images left out as undecodable
        self._loaded = None
        self._val_set = None
        self._validation: dict[str, PairsValidation] = {}  # readout -> its validation pairs, made with the train pairs
        self.readouts: set[str] = {"layers"}  # set by the runner: what the heads of this run read (heads/base.py)
        self.slot: adapt.EncoderSlot | None = None  # with train.encoder: the towers every point set is made by

    def load_test_set(self, root: Path, name: str):
        raise NotImplementedError

    def loaded(self) -> tuple[dict, retrieval_data.RetrievalSet]:
        """Every test set (none when the test set is sealed), then the training set, read and validated
        once (no images decoded)."""
        if self._loaded is None:
            image_source.reset()  # read the data as it is now, not as an earlier run in this process saw it
            root = self.roots()[0]
            tests = {d: self.load_test_set(root, d) for d in self.params["datasets"]} if self.with_test else {}
            self._loaded = tests, self.train_set()
        return self._loaded

    def karpathy_val(self) -> retrieval_data.RetrievalSet | None:
        """COCO Karpathy val (clip_benchmark's layout) when the pairs are COCO train and it is there (or asked
        for); None: validation is held out of the training images."""
        p = self.params
        if p["validation"] == "holdout":
            return None
        coco_train = p["train_dataset"] == "mscoco_captions" and p["train_split"] == "train"
        present = (self.roots()[0] / "mscoco_captions" / "coco_val_karpathy.json").is_file()
        if p["validation"] == "karpathy" and not (coco_train and present):
            raise DataError(
                f"suites.{self.name}.validation = karpathy needs train_dataset mscoco_captions (split train) and "
                f"{self.roots()[0] / 'mscoco_captions' / 'coco_val_karpathy.json'}; set validation: holdout to "
                "hold images out of the training pairs instead."
            )
        if not (coco_train and present):
            return None
        if self._val_set is None:
            self._val_set = retrieval_data.load(self.roots()[0], "mscoco_captions", "val", columns=self.columns())
        return self._val_set

    def data_identity(self, seed: int) -> dict:
        """Backbone weights by content; every image list by names, sizes and modification times; the
        captions, labels and prompts by content. Nothing is decoded, no model is built."""
        self.check_cache_dir()
        tests, train = self.loaded()
        stamp = lambda ds: {"fingerprint": ds.fingerprint(), "files": extract.fingerprint_files(ds.image_paths)}  # noqa: E731 (a one-line helper, used just below)
        return {
            "backbone": weights_identity(BackboneSpec.parse(self.params["backbone"]), seed),
            "test": {name: stamp(ds) for name, ds in tests.items()},
            "train": stamp(train),
            **({"validation": stamp(val)} if (val := self.karpathy_val()) is not None else {}),
        }

    def check_cache_dir(self) -> None:
        """The feature cache must be a writable folder, checked before any forward pass is spent."""
        cache = self.roots()[1]
        where = (
            "suite option cache_dir"
            if self.params["cache_dir"]
            else ("$SIMBENCH_CACHE" if environment.feature_cache() else "the default cache folder")
        )
        problem = atomic.folder_problem(cache, create=True)
        if problem:
            fix = "a folder (it is created if missing)" if "not a folder" in problem else "a folder you can write to"
            raise ConfigError(f"feature cache {str(cache)!r} ({where}) {problem}; point {where} at {fix}.")

    def roots(self) -> tuple[Path, Path]:
        p = self.params
        root = default_root(p["data_root"])
        cache = p["cache_dir"] or environment.feature_cache() or Path.home() / ".cache" / "simbench" / "features"
        return root, Path(cache)  # never inside the data root, which may be read-only or shared

    def backbone(self, seed: int) -> Backbone:
        return Backbone(BackboneSpec.parse(self.params["backbone"]), self.params["layers"], self.device, seed)

    def cache(self) -> FeatureCache:
        return FeatureCache(self.roots()[1])

    def image_points(self, backbone, cache, name: str, split: str, paths, readout: str = "layers"):
        """Points for every image (a tensor, or token sets on disk), and which to keep: undecodable ones
        fail the run unless skip_corrupt."""
        kw = {"batch_size": self.params["batch_size"], "workers": self.params["workers"]}
        if self.slot is not None:
            got = extract.image_prefix_sets(cache, self.slot, name, split, paths, readout, **kw)
        else:
            read = extract.image_token_sets if readout == "tokens" else extract.image_points
            got = read(cache, backbone, name, split, paths, **kw)
        keep = torch.ones(len(paths), dtype=torch.bool)
        if got.corrupt:
            files = {str(paths[i]): why for i, why in sorted(got.corrupt.items())}
            if not self.params["skip_corrupt"]:
                raise CorruptImages(corrupt_message(name, split, len(paths), files))
            keep[list(got.corrupt)] = False
            self.corrupt[f"{name}/{split}"] = {"count": len(files), "of": len(paths), "files": files}
            if distributed.is_main():
                print(
                    f"[{self.name}] {name}/{split}: left out {len(files)} undecodable image(s) (skip_corrupt); "
                    "they are listed in the result file.",
                    file=sys.stderr,
                )
        return got.points, keep

    def text_points(self, backbone, cache, name: str, split: str, texts, readout: str = "layers"):
        if self.slot is not None:
            kw = {"batch_size": self.params["text_batch_size"]}
            return extract.text_prefix_sets(cache, self.slot, name, split, texts, readout, **kw).points
        read = extract.text_token_sets if readout == "tokens" else extract.text_points
        return read(cache, backbone, name, split, texts, batch_size=self.params["text_batch_size"]).points

    def columns(self) -> dict:
        return {k: self.params[k] for k in self.COLUMN_OPTIONS if k in self.params}

    def source(self, name: str) -> str | None:
        return (self.params.get("sources") or {}).get(name)

    def train_set(self) -> retrieval_data.RetrievalSet:
        """Validated before any backbone work, like every test set."""
        return retrieval_data.load(
            self.roots()[0], self.params["train_dataset"], self.params["train_split"], columns=self.columns()
        )

    def build(self, seed: int, with_test: bool = True) -> SuiteData:
        """The data of every readout the run's heads need, each from its own cache entries."""
        self.with_test = self.with_test and with_test
        tests, train = self.loaded()  # every dataset validated before any backbone work
        backbone, cache = self.backbone(seed), self.cache()
        if self.encoder is not None and not self.encoder.frozen:
            self.slot = adapt.EncoderSlot(adapt.Adapter(backbone, self.encoder))
        views = {r: self.build_readout(backbone, cache, tests, train, r) for r in sorted(self.readouts)}
        for readout, view in views.items():
            view.validation = self._validation[readout]
            view.identity["validation"] = self._validation_identity
            view.encoder = self.slot
            if not self.with_test:
                view.test = SealedTest(self.name)
        main = views.get("layers") or next(iter(views.values()))
        main.views = views
        return main

    def build_readout(self, backbone, cache, tests: dict, train, readout: str) -> SuiteData:
        raise NotImplementedError

    def train_pairs(self, train: retrieval_data.RetrievalSet, backbone, cache, readout: str = "layers") -> PointSets:
        """The training pairs, and (kept for ``build``) the validation pairs: COCO Karpathy val, or the
        captions of held-out training images (seeded, image-disjoint from the pairs trained on)."""
        img, keep = self.image_points(backbone, cache, train.name, train.split, train.image_paths, readout)
        txt = self.text_points(backbone, cache, train.name, train.split, train.captions, readout)
        image_of_pair = torch.tensor(train.caption_image, dtype=torch.long)
        val_set = self.karpathy_val()
        if val_set is not None:
            v_img, v_keep = self.image_points(backbone, cache, val_set.name, "val", val_set.image_paths, readout)
            v_txt = self.text_points(backbone, cache, val_set.name, "val", val_set.captions, readout)
            self._validation[readout] = _validation_pairs(v_img, v_txt, torch.tensor(val_set.caption_image), v_keep)
            self._validation_identity = {
                "source": "mscoco_captions val (Karpathy)",
                "fingerprint": val_set.fingerprint(),
                "images": int(v_keep.sum()),
                "captions": len(val_set.captions),
            }
        else:
            n = len(train.image_paths)
            held = torch.zeros(n, dtype=torch.bool)
            count = min(self.params["validation_images"], max(1, n // 10))
            order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            held[order[:count]] = True  # seeded by the data alone: the same images for every run and head
            self._validation[readout] = _validation_pairs(img, txt, image_of_pair, keep & held)
            self._validation_identity = {
                "source": f"held-out {train.name}/{train.split} images",
                "images": count,
                "captions": len(self._validation[readout].texts),
                "seed": 0,
            }
            keep = keep & ~held
        pairs = keep[image_of_pair]  # a left-out (or held-out) image takes its captions with it
        return PointSets(img, txt[pairs], image_of_pair=image_of_pair[pairs])

    def suite_data(self, backbone, train, pairs: PointSets, test: dict, datasets: dict) -> SuiteData:
        """The built suite: training pairs, test sets by dataset, and what identifies them."""
        identity = {
            "backbone": backbone.identity,
            "datasets": datasets,
            "train": self.train_identity(train, pairs),
            "corrupt_images_skipped": self.corrupt,
        }
        return SuiteData(pairs, pairs.images.shape[-1], pairs.texts.shape[-1], test, identity)

    def validate(self, head, data: SuiteData, device) -> float:
        return data.validation.recall_sum(head, device)

    def evaluate(self, head, data: SuiteData, device) -> Evaluation:
        """Every test set in turn; a suite says what one dataset's metrics are (``evaluate_dataset``)."""
        head.eval()
        out = Evaluation({})
        for name, t in data.test.items():
            image_rep = encode(head, "image", t.images, None, device)
            out.merge(as_evaluation(self.evaluate_dataset(head, image_rep, t, device)).prefixed(name))
        return out

    def diagnostic_points(self, data: SuiteData, n: int = 256):
        first = next(iter(data.test.values()), None)
        if first is not None and not isinstance(first.images, torch.Tensor):  # token sets: no diagnostics
            return None
        texts = getattr(first, "texts", None) if first is not None else None
        texts = getattr(first, "prompts", None) if texts is None and first is not None else texts
        return None if first is None or texts is None else (first.images[:n], texts[:n])

    def evaluate_dataset(self, head, image_rep, test, device) -> Evaluation:
        raise NotImplementedError

    @staticmethod
    def train_identity(train: retrieval_data.RetrievalSet, pairs: PointSets) -> dict:
        return {"dataset": train.name, "split": train.split, "pairs": len(pairs), "fingerprint": train.fingerprint()}


def _validation_pairs(images, texts, caption_image: torch.Tensor, chosen: torch.Tensor) -> PairsValidation:
    """The chosen images (a bool mask over ``images``) with all their captions, renumbered."""
    rows = chosen.nonzero().flatten()
    caps = chosen[caption_image].nonzero().flatten()
    new_index = torch.cumsum(chosen, 0) - 1
    if getattr(images, "adapted", False):  # made by the towers as they train: stays a view, read when measured
        return PairsValidation(images.select(rows), None, texts.select(caps), None, new_index[caption_image[caps]])
    img, img_mask = rows_of(images, None, rows, "cpu")
    txt, txt_mask = rows_of(texts, None, caps, "cpu")
    return PairsValidation(img, img_mask, txt, txt_mask, new_index[caption_image[caps]])

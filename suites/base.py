"""What a suite is: data to train heads on, test sets, and the metrics it reports.

Metadata is data: each suite declares its name, version, main metric and the direction of every
metric, so leaderboards, plots and the regression check need no per-suite code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.core.registry import Registry
from bench.eval.scoring import rows_of

SUITES: Registry[type[Suite]] = Registry("suite")


def register_suite(name: str):
    return SUITES.register(name)


def get_suite(name: str) -> type[Suite]:
    return SUITES.get(name)


def list_suites() -> list[str]:
    return SUITES.names()


@dataclass(frozen=True)
class ReportTable:
    """One leaderboard table: a title, (short column label, metric) pairs, and what the labels mean.
    Columns whose metric no row has (a dataset not in the run) are dropped, and empty tables too."""

    title: str
    columns: tuple[tuple[str, str], ...]
    legend: str = ""


@dataclass
class Evaluation:
    """What ``evaluate`` returns: the metrics, and optionally what each test query contributed
    (``outcomes``: name -> per-query array) with ``spec`` saying how each metric is made of them
    (bench/eval/uncertainty.py). Outcomes give intervals and paired tests without a rerun."""

    metrics: dict[str, float]
    outcomes: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, dict] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # JSON facts that are not metrics (a chosen weight decay)

    def prefixed(self, prefix: str) -> Evaluation:
        """The same under ``prefix/`` (one dataset of several): metric, array and reference names."""

        def ref(s: dict) -> dict:
            out = dict(s)
            for key in ("query", "values", "labels", "ties"):
                if key in out:
                    out[key] = f"{prefix}/{out[key]}"
            if "of" in out:
                out["of"] = (
                    [f"{prefix}/{m}" for m in out["of"]] if isinstance(out["of"], list) else f"{prefix}/{out['of']}"
                )
            out["space"] = f"{prefix}/{out['space']}" if out.get("space") else prefix  # its own test units
            return out

        return Evaluation(
            {f"{prefix}/{k}": v for k, v in self.metrics.items()},
            {f"{prefix}/{k}": v for k, v in self.outcomes.items()},
            {f"{prefix}/{k}": ref(s) for k, s in self.spec.items()},
            {f"{prefix}/{k}": v for k, v in self.details.items()},
        )

    def merge(self, other: Evaluation) -> None:
        self.metrics.update(other.metrics)
        self.outcomes.update(other.outcomes)
        self.spec.update(other.spec)
        self.details.update(other.details)


def as_evaluation(result) -> Evaluation:
    """A suite may return a plain metrics dict (no outcomes) or an ``Evaluation``."""
    return result if isinstance(result, Evaluation) else Evaluation(dict(result))


@dataclass
class PointSets:
    """Paired point sets: row i of ``images`` goes with row i of ``texts``."""

    images: torch.Tensor
    texts: torch.Tensor
    image_mask: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    # Pair i is (images[image_of_pair[i]], texts[i]) when set: several captions share one image
    # without copying its points once per caption.
    image_of_pair: torch.Tensor | None = None

    def __post_init__(self):
        n_img = self.images.shape[0] if self.image_of_pair is None else self.image_of_pair.shape[0]
        if n_img != self.texts.shape[0]:
            raise ValueError(f"paired point sets need as many images as texts, got {n_img} and {self.texts.shape[0]}.")

    def __len__(self) -> int:
        return self.texts.shape[0]

    def image_rows(self, idx: torch.Tensor) -> torch.Tensor:
        return idx if self.image_of_pair is None else self.image_of_pair[idx]

    def image_batch(self, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image point sets and mask of pairs ``idx``, on ``device`` (read from disk for token sets)."""
        return rows_of(self.images, self.image_mask, self.image_rows(idx), device)

    def text_batch(self, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        return rows_of(self.texts, self.text_mask, idx, device)


@dataclass(frozen=True)
class ValidationSpec:
    """What a suite selects and early-stops on: a metric measured on validation data (never the test set)."""

    metric: str
    higher_is_better: bool
    tolerance: float  # an improvement larger than this over the last 20% of training steps: "not converged"


@dataclass
class PairsValidation:
    """Held-out image-caption pairs (image-disjoint from training): recall both ways, summed."""

    images: torch.Tensor
    image_mask: torch.Tensor | None
    texts: torch.Tensor
    text_mask: torch.Tensor | None
    caption_image: torch.Tensor  # [captions] index of each caption's image

    def recall_sum(self, head, device) -> float:
        from bench.eval import metrics
        from bench.eval.scoring import encode, score_matrices

        img = encode(head, "image", self.images, self.image_mask, device)
        txt = encode(head, "text", self.texts, self.text_mask, device)
        i2t, t2i = (m.cpu() for m in score_matrices(head, img, txt, len(self.images), len(self.texts)))
        positives = torch.zeros_like(i2t, dtype=torch.bool)
        positives[self.caption_image, torch.arange(len(self.texts))] = True
        return float(sum(metrics.retrieval_recalls(i2t, positives, (1, 5, 10), t2i=t2i).values()))


class SealedTestError(RuntimeError):
    """Something read the test set of a run that must not (a bug in the suite or the runner, not a head's)."""


class SealedTest:
    """The test data of a run that must not read it (tuning trials): any use is an error."""

    def __init__(self, suite: str):
        object.__setattr__(self, "_suite", suite)

    def __getattr__(self, name):
        raise SealedTestError(
            f"suite {self._suite!r}: the test set is sealed in this run (a tuning trial selects on validation "
            f"data only), yet something asked for test.{name}."
        )

    def __iter__(self):
        self.__getattr__("__iter__")

    def __len__(self):
        self.__getattr__("__len__")

    def __bool__(self):
        self.__getattr__("__bool__")


@dataclass
class SuiteData:
    train: PointSets
    image_dim: int
    text_dim: int
    test: Any  # suite-specific test data
    identity: dict = field(default_factory=dict)  # what identifies the test set in result files
    validation: Any = None  # suite-specific validation data, disjoint from train and test (None: none)
    # The same data as another readout gives it (heads/base.py READOUTS), when the run has heads of several.
    views: dict[str, SuiteData] = field(default_factory=dict)
    # With train.encoder: the slot whose towers make every point set of this data (bench/features/adapt.py)
    encoder: Any = None

    def for_readout(self, readout: str) -> SuiteData:
        """What a head of this readout trains and is tested on; generated data (the synthetic suite) has one
        form for every readout: its draws play the part of tokens and their mean that of the pooled token."""
        return self.views.get(readout, self)


class Suite:
    name: str = ""
    version: int = 1
    description: str = ""
    main_metric: str = ""
    metrics: dict[str, bool] = {}  # metric -> higher is better
    headline_metrics: tuple[str, ...] = ()  # what the plot shows beside the main metric
    summary_metrics: tuple[str, ...] = ()  # the main metric per dataset, for the summary table (default: main_metric)
    # How the leaderboard lays the metrics out (default: one table of every metric, by its full name).
    report_tables: tuple[ReportTable, ...] = ()
    defaults_file: str | None = None  # YAML beside the module with the default parameters
    # Parameters that change where or how fast, never what, is computed: left out of the protocol hash.
    non_protocol_params: tuple[str, ...] = ()
    # Integer parameters that repeat r of a run adds r to: the random choices of the suite itself that
    # are not its fixed test data (the synthetic world). Real test sets never vary.
    repeat_params: tuple[str, ...] = ()
    device: torch.device = torch.device("cpu")  # set by the runner before build()
    seed: int = 0  # the cell's seed (run seed + repeat), set by the runner before build()
    with_test: bool = True  # False in tuning trials: test data is neither identified nor read (set by the runner)
    encoder = None  # train.encoder (bench/features/adapt.py EncoderSpec), set by the runner before build()
    adapts_encoder: bool = False  # True: a backbone suite whose towers' last blocks can train with each head
    reference_names: tuple[str, ...] = ()  # the rows references() returns (ceilings, not contestants)
    validation: ValidationSpec | None = None  # what validate() measures; None: no curves, no early stopping
    # Head options this suite runs with unless the config sets them, for every head that has the option
    # (e.g. the synthetic suite's out_dim below its topics' count); resolved into each cell's options.
    head_defaults: dict = {}

    @classmethod
    def default_params(cls) -> dict:
        if cls.defaults_file is None:
            return {}
        import copy
        import importlib

        from bench.core import snapshot

        def read() -> dict:
            module_dir = Path(importlib.import_module(cls.__module__).__file__).parent
            return yaml.safe_load((module_dir / cls.defaults_file).read_text()) or {}

        # read once per run (a frozen snapshot), like the code the run is keyed by; a copy, since callers merge into it
        return copy.deepcopy(snapshot.memo(f"suite_defaults:{cls.__module__}:{cls.defaults_file}", read))

    @classmethod
    def check_params(cls, params: dict, train: dict) -> None:
        """Raise ``ConfigError`` for values the types allow but the suite cannot run (before any work)."""

    def __init__(self, params: dict):
        self.params = params

    def data_identity(self, seed: int) -> dict:
        """What identifies the data beyond the parameters (file fingerprints, weights' content), computed
        without building anything: part of every cell's key, so changed data is never served stale results.
        Generated data is identified by the parameters and the code, which the key holds already."""
        return {}

    def build(self, seed: int, with_test: bool = True) -> SuiteData:
        """Training and validation data, and the test data unless ``with_test`` is False: then ``test`` is a
        ``SealedTest`` and no test file or test sample is read (tuning trials)."""
        raise NotImplementedError

    def skip_reason(self, head_cls) -> str | None:
        """Why this suite cannot measure heads of this class (recorded as skipped, not failed), or None."""
        return None

    def validate(self, head, data: SuiteData, device: torch.device) -> float:
        """The validation metric (``validation.metric``) of ``head`` on ``data.validation``; never reads test."""
        raise NotImplementedError

    def evaluate(self, head, data: SuiteData, device: torch.device) -> Evaluation | dict[str, float]:
        """The metrics of ``head`` on the test data: a dict, or an ``Evaluation`` with per-query outcomes."""
        raise NotImplementedError

    def diagnostic_points(self, data: SuiteData, n: int = 256) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Up to ``n`` test image and text point sets for heads' ``diagnostics`` (None: no diagnostics)."""
        return None

    def references(self, data: SuiteData) -> dict[str, dict[str, float]]:
        """Rows that are not heads (e.g. an oracle ceiling), name -> metrics."""
        return {}

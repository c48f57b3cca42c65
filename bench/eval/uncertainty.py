"""Per-query outcomes, and the intervals and paired tests computed from them.

A suite writes, beside each result, what every test query contributed (docs/results.md): for a
ranking, the rank of the first positive, as (negatives strictly above the best positive, negatives
tied with it, positives tied with it), which gives recall@k for any k exactly, ties included; for
other metrics, each query's own term of the mean. A *spec* says how each metric is made from those
arrays, so a leaderboard, ``compare`` or a regression check needs no suite code and no rerun.

Resampling is by *unit*: an image with all of its captions (an image's five captions are not
independent), a classification sample, a synthetic test item. A metric that is a mean over
queries is then ``sum over units of the units' sums / sum over units of their query counts``, so
a bootstrap draw is a vector of unit counts W and the metric is ``(W @ S) / (W @ C)``: one matrix
product per block of draws, however many queries there are.

Spec kinds (name -> {"kind": ..., ...}):
- ``hit``: {"query": PREFIX, "k": K}: mean of P(hit at k) from PREFIX/rank, /tied_neg, /tied_pos,
  units PREFIX/unit (default: one unit per query).
- ``mean``: {"values": NAME}: mean of a per-query array, units NAME's ``/unit`` or one per query.
- ``sum``: {"of": [metrics]}: the sum of other metrics (e.g. RSUM).
- ``balanced_hit``: {"query": PREFIX, "k": K, "labels": NAME}: the mean over classes present of
  the class's hit rate (sklearn's balanced accuracy at k = 1).
- ``scaled``: {"of": metric, "by": FACTOR}.
Any spec may name its ``space``: the set of test units it is resampled over (one per dataset of a
suite with several; default: the suite's one test set). Each space is drawn independently.
Metrics with no per-query form (e.g. a correlation over all pairs) have no spec and no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench.eval.metrics import hit_probability, require_finite

DEFAULT_RESAMPLES = 10_000
CHUNK_CELLS = 4_000_000  # draws x units per block: bounds memory (~32 MB) whatever the test set


def rank_outcomes(scores: torch.Tensor, positives: torch.Tensor, block: int = 4096) -> dict[str, np.ndarray]:
    """Per query row: negatives strictly above its best positive (its 0-based rank when nothing ties),
    negatives tied with it, positives tied with it; and how many candidates each row has."""
    require_finite(scores, "scores ranked for per-query outcomes")
    out = {"rank": [], "tied_neg": [], "tied_pos": []}
    for start in range(0, scores.shape[0], block):
        s = scores[start : start + block].double()
        pos = positives[start : start + block].to(s.device)
        best = s.masked_fill(~pos, float("-inf")).max(dim=1, keepdim=True).values
        out["rank"].append(((s > best) & ~pos).sum(dim=1))
        out["tied_neg"].append(((s == best) & ~pos).sum(dim=1))
        out["tied_pos"].append(((s == best) & pos).sum(dim=1))
    found = {k: torch.cat(v).to(torch.int32).cpu().numpy() for k, v in out.items()}
    found["n_candidates"] = np.asarray(scores.shape[1], dtype=np.int32)  # per query row (the degenerate check)
    return found


def hits(arrays: dict, prefix: str, k: int) -> np.ndarray:
    g, e, p = (
        torch.from_numpy(np.asarray(arrays[f"{prefix}/{n}"], dtype=np.float64))
        for n in ("rank", "tied_neg", "tied_pos")
    )
    return hit_probability(k - g, e, p).numpy()


# -- estimators: a metric as a function of unit counts -----------------------------------------------
@dataclass
class Mean:
    """Mean over queries of ``values``; queries grouped into resampling units ``units``."""

    values: np.ndarray
    units: np.ndarray
    n_units: int

    def __post_init__(self):
        self.S = np.bincount(self.units, weights=self.values, minlength=self.n_units).astype(np.float64)
        self.C = np.bincount(self.units, minlength=self.n_units).astype(np.float64)

    def point(self) -> float:
        return float(self.S.sum() / self.C.sum())

    def draws(self, W: np.ndarray) -> np.ndarray:
        return (W @ self.S) / (W @ self.C)

    def unit_terms(self) -> np.ndarray:
        """Each unit's share of the point value: the metric is their sum (for sign-flip tests)."""
        return self.S / self.C.sum()


@dataclass
class Sum:
    parts: list

    def point(self) -> float:
        return float(sum(p.point() for p in self.parts))

    def draws(self, W: np.ndarray) -> np.ndarray:
        return sum(p.draws(W) for p in self.parts)

    def unit_terms(self) -> np.ndarray:
        return sum(p.unit_terms() for p in self.parts)


@dataclass
class Scaled:
    part: object
    factor: float

    def point(self) -> float:
        return self.factor * self.part.point()

    def draws(self, W: np.ndarray) -> np.ndarray:
        return self.factor * self.part.draws(W)

    def unit_terms(self) -> np.ndarray:
        return self.factor * self.part.unit_terms()


@dataclass
class Balanced:
    """Mean over the classes present of each class's mean ``values`` (units: one per sample)."""

    values: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        self.classes, self.index = np.unique(self.labels, return_inverse=True)
        self.n_units = len(self.values)

    def point(self) -> float:
        hit = np.bincount(self.index, weights=self.values)
        count = np.bincount(self.index)
        return float(np.mean(hit / count))

    def draws(self, W: np.ndarray) -> np.ndarray:
        Wt = torch.from_numpy(W)
        idx = torch.from_numpy(self.index).expand(W.shape[0], -1)
        hit = torch.zeros(W.shape[0], len(self.classes), dtype=torch.float64).scatter_add_(
            1, idx, Wt * torch.from_numpy(self.values)
        )
        count = torch.zeros_like(hit).scatter_add_(1, idx, Wt)
        present = count > 0
        return ((hit / count.clamp(min=1)).sum(1) / present.sum(1)).numpy()

    def unit_terms(self) -> np.ndarray:
        count = np.bincount(self.index)
        return self.values / count[self.index] / len(self.classes)


def estimators(arrays: dict, spec: dict) -> dict:
    """Metric name -> estimator, built from an outcome file's arrays and its spec."""
    made: dict = {}

    def units_of(name: str, n: int) -> tuple[np.ndarray, int]:
        if f"{name}/unit" in arrays:
            u = np.asarray(arrays[f"{name}/unit"], dtype=np.int64)
            return u, int(arrays[f"{name}/n_units"]) if f"{name}/n_units" in arrays else int(u.max()) + 1
        return np.arange(n), n

    def build(metric: str):
        if metric in made:
            return made[metric]
        s = spec[metric]
        if s["kind"] == "hit":
            values = hits(arrays, s["query"], int(s["k"]))
            made[metric] = Mean(values, *units_of(s["query"], len(values)))
        elif s["kind"] == "mean":
            values = np.asarray(arrays[s["values"]], dtype=np.float64)
            made[metric] = Mean(values, *units_of(s["values"], len(values)))
        elif s["kind"] == "sum":
            made[metric] = Sum([build(m) for m in s["of"]])
        elif s["kind"] == "scaled":
            made[metric] = Scaled(build(s["of"]), float(s["by"]))
        elif s["kind"] == "balanced_hit":
            made[metric] = Balanced(hits(arrays, s["query"], int(s["k"])), np.asarray(arrays[s["labels"]]))
        else:
            raise ValueError(f"outcome spec of {metric!r}: unknown kind {s['kind']!r}.")
        return made[metric]

    for metric in spec:
        build(metric)
        made[metric].space = spec[metric].get("space", "")
    return made


def _by_space(ests: dict) -> dict[str, list[str]]:
    spaces: dict[str, list[str]] = {}
    for name, est in ests.items():
        spaces.setdefault(getattr(est, "space", ""), []).append(name)
    return spaces


def n_units(est) -> int:
    if isinstance(est, (Sum,)):
        return n_units(est.parts[0])
    if isinstance(est, Scaled):
        return n_units(est.part)
    return est.n_units


# -- bootstrap and randomization ----------------------------------------------------------------------
def _count_blocks(n: int, resamples: int, seed: int):
    """Blocks of bootstrap draws: each row holds how often each of ``n`` units was drawn (n draws)."""
    g = torch.Generator().manual_seed(int(seed))
    per = max(1, CHUNK_CELLS // max(n, 1))
    done = 0
    while done < resamples:
        b = min(per, resamples - done)
        idx = torch.randint(n, (b, n), generator=g)
        yield torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(b, n, dtype=torch.float64)).numpy()
        done += b


def bootstrap(
    ests: dict,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    repeat_groups: list[dict] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals per metric, every metric from the same draws of units.

    With several repeats (``repeat_groups``: one estimator dict per repeat, same test units), each
    draw first picks repeats with replacement, then units, and averages the metric over the picked
    repeats; ``ests`` is then ignored.
    """
    groups = repeat_groups or [ests]
    draws: dict[str, list] = {}
    rng = np.random.default_rng(seed + 1)
    for i, (_space, names) in enumerate(sorted(_by_space(groups[0]).items())):
        n = n_units(groups[0][names[0]])
        for m in names:
            draws[m] = []
        for W in _count_blocks(n, resamples, seed + 1000 * i):
            if len(groups) == 1:
                for m in names:
                    draws[m].append(groups[0][m].draws(W))
            else:
                picks = rng.integers(len(groups), size=(W.shape[0], len(groups)))
                for m in names:
                    per_repeat = np.stack([g[m].draws(W) for g in groups], axis=1)  # [b, repeats]
                    draws[m].append(np.take_along_axis(per_repeat, picks, axis=1).mean(axis=1))
    alpha = (1 - level) / 2
    return {m: tuple(float(x) for x in np.quantile(np.concatenate(d), [alpha, 1 - alpha])) for m, d in draws.items()}


def paired(a, b, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """Per metric both heads have: the difference a - b, its paired-bootstrap interval (the same unit
    draws for both), and a two-sided sign-flip randomization p-value (units' differences flipped).

    ``a`` and ``b`` may be lists of estimator dicts, one per repeat (repeat r of both on the same test
    data): a draw then picks repeats (the same for both heads) and units; the difference is the mean over
    repeats, and the p-value is the bootstrap's own (twice the share of draws on the far side of 0), so
    that it carries the training noise between repeats as the interval does. A sign-flip over (repeat,
    unit) terms would treat the repeats' test units as independent and ignore that noise."""
    if isinstance(a, list) or isinstance(b, list):
        return _paired_repeats(
            list(a) if isinstance(a, list) else [a], list(b) if isinstance(b, list) else [b], resamples, seed, level
        )
    names = [m for m in a if m in b]
    if not names:
        return {}
    diffs: dict[str, list] = {}
    for i, (space, in_space) in enumerate(sorted(_by_space({m: a[m] for m in names}).items())):
        n = n_units(a[in_space[0]])
        if n != n_units(b[in_space[0]]):
            raise ValueError(
                f"the two results were scored on different test sets ({n} vs {n_units(b[in_space[0]])} "
                f"units{' in ' + space if space else ''})"
            )
        for m in in_space:
            diffs[m] = []
        for W in _count_blocks(n, resamples, seed + 1000 * i):
            for m in in_space:
                diffs[m].append(a[m].draws(W) - b[m].draws(W))
    g = torch.Generator().manual_seed(int(seed) + 7)
    out = {}
    alpha = (1 - level) / 2
    for m in names:
        lo, hi = np.quantile(np.concatenate(diffs[m]), [alpha, 1 - alpha])
        out[m] = {
            "difference": a[m].point() - b[m].point(),
            "low": float(lo),
            "high": float(hi),
            "p_value": _sign_flip_p(a[m].unit_terms() - b[m].unit_terms(), resamples, g),
        }
    return out


def _sign_flip_p(terms: np.ndarray, resamples: int, g: torch.Generator) -> float:
    """Two-sided p-value of sum(terms) under random sign flips of the terms (paired units exchangeable)."""
    terms = torch.from_numpy(np.asarray(terms, dtype=np.float64))
    observed, extreme = abs(float(terms.sum())), 0
    per = max(1, CHUNK_CELLS // max(len(terms), 1))
    for start in range(0, resamples, per):
        rows = min(per, resamples - start)
        signs = torch.randint(0, 2, (rows, len(terms)), generator=g, dtype=torch.float64) * 2 - 1
        extreme += int(((signs @ terms).abs() >= observed - 1e-12).sum())
    return (1 + extreme) / (1 + resamples)


def _paired_repeats(a: list, b: list, resamples: int, seed: int, level: float) -> dict[str, dict]:
    if len(a) != len(b):
        raise ValueError(f"the two heads have {len(a)} and {len(b)} repeats; compare the same repeats of both")
    if len(a) == 1:
        return paired(a[0], b[0], resamples, seed, level)
    names = [m for m in a[0] if all(m in x for x in a + b)]
    R = len(a)
    rng = np.random.default_rng(seed + 1)
    diffs: dict[str, list] = {}
    for i, (_space, in_space) in enumerate(sorted(_by_space({m: a[0][m] for m in names}).items())):
        n = n_units(a[0][in_space[0]])
        for m in in_space:
            diffs[m] = []
        for W in _count_blocks(n, resamples, seed + 1000 * i):
            picks = rng.integers(R, size=(W.shape[0], R))
            for m in in_space:
                per_repeat = np.stack([a[r][m].draws(W) - b[r][m].draws(W) for r in range(R)], axis=1)
                diffs[m].append(np.take_along_axis(per_repeat, picks, axis=1).mean(axis=1))
    alpha = (1 - level) / 2
    out = {}
    for m in names:
        draws = np.concatenate(diffs[m])
        lo, hi = np.quantile(draws, [alpha, 1 - alpha])
        out[m] = {
            "difference": float(np.mean([a[r][m].point() - b[r][m].point() for r in range(R)])),
            "low": float(lo),
            "high": float(hi),
            "p_value": bootstrap_p(draws),
        }
    return out


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": twice the smaller share of draws at or beyond 0."""
    below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
    return min(1.0, 2 * (1 + min(below, above)) / (1 + len(draws)))


def holm(p_values: dict) -> dict:
    """Holm's step-down adjustment across a family of tests (keys kept)."""
    order = sorted(p_values, key=lambda k: p_values[k])
    adjusted, running = {}, 0.0
    m = len(order)
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        adjusted[key] = running
    return adjusted


def half_width(interval: tuple[float, float]) -> float:
    lo, hi = interval
    return (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else float("nan")

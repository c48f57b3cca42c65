"""Intervals and paired tests from per-query outcomes, checked against slow references."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from bench.eval import metrics, uncertainty
from bench.eval.uncertainty import Balanced, Mean


def test_rank_outcomes_give_back_recall_at_k_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (30, 12), generator=g).double()  # many ties
    positives = torch.rand(30, 12, generator=g) < 0.2
    positives[torch.arange(30), torch.randint(0, 12, (30,), generator=g)] = True
    arrays = {f"q/{k}": v for k, v in uncertainty.rank_outcomes(scores, positives).items()}
    for k in (1, 5, 10):
        est = uncertainty.estimators(arrays, {"r": {"kind": "hit", "query": "q", "k": k}})["r"]
        assert est.point() == pytest.approx(metrics.recall_at_k(scores, positives, (k,))[k], abs=1e-12)


def test_bootstrap_interval_agrees_with_scipy_on_a_mean():
    rng = np.random.default_rng(1)
    values = rng.random(300) < 0.3
    est = Mean(values.astype(float), np.arange(300), 300)
    ours = uncertainty.bootstrap({"m": est}, resamples=10_000, seed=3)["m"]
    ref = stats.bootstrap(
        (values.astype(float),), np.mean, n_resamples=10_000, method="percentile", random_state=4
    ).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.01) and ours[1] == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_matches_a_plain_loop_over_grouped_units():
    """Units of different sizes: resample units, pool their queries; a loop does it the slow way."""
    rng = np.random.default_rng(2)
    units = np.repeat(np.arange(40), rng.integers(1, 6, 40))
    values = rng.random(len(units))
    est = Mean(values, units, 40)
    ours = uncertainty.bootstrap({"m": est}, resamples=4000, seed=5)["m"]
    draws = []
    for _ in range(4000):
        pick = rng.integers(0, 40, 40)
        chosen = np.concatenate([values[units == u] for u in pick])
        draws.append(chosen.mean())
    ref = np.quantile(draws, [0.025, 0.975])
    assert ours[0] == pytest.approx(ref[0], abs=0.012) and ours[1] == pytest.approx(ref[1], abs=0.012)


def test_keeping_captions_with_their_image_widens_the_interval_when_they_agree():
    """Five captions per image that succeed or fail together are one observation, not five."""
    rng = np.random.default_rng(3)
    per_image = rng.random(200) < 0.5
    values = np.repeat(per_image, 5).astype(float)
    grouped = Mean(values, np.repeat(np.arange(200), 5), 200)
    independent = Mean(values, np.arange(1000), 1000)
    wide = uncertainty.half_width(uncertainty.bootstrap({"m": grouped}, 5000)["m"])
    narrow = uncertainty.half_width(uncertainty.bootstrap({"m": independent}, 5000)["m"])
    assert wide == pytest.approx(narrow * np.sqrt(5), rel=0.15)


def test_sign_flip_p_value_matches_exact_enumeration():
    a = np.array([1, 1, 0, 1, 1, 0, 1, 1], dtype=float)
    b = np.array([0, 1, 0, 0, 1, 1, 0, 0], dtype=float)
    ea, eb = {"m": Mean(a, np.arange(8), 8)}, {"m": Mean(b, np.arange(8), 8)}
    d = (a - b) / 8
    observed = abs(d.sum())
    exact = np.mean([abs((np.array(s) * d).sum()) >= observed - 1e-12 for s in itertools.product([-1, 1], repeat=8)])
    got = uncertainty.paired(ea, eb, resamples=20_000, seed=1)["m"]["p_value"]
    assert got == pytest.approx(exact, abs=0.015)


def test_identical_heads_differ_by_zero_with_p_one_and_a_dominant_head_has_tiny_p():
    rng = np.random.default_rng(4)
    v = rng.random(500)
    same = uncertainty.paired({"m": Mean(v, np.arange(500), 500)}, {"m": Mean(v.copy(), np.arange(500), 500)}, 2000)[
        "m"
    ]
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["p_value"] == 1.0
    better = uncertainty.paired(
        {"m": Mean(v + 0.01, np.arange(500), 500)}, {"m": Mean(v, np.arange(500), 500)}, 10_000
    )["m"]
    assert better["p_value"] < 0.001 and better["low"] > 0


def test_balanced_accuracy_point_and_draws_agree_with_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, 200)
    pred = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 7, 200))
    est = Balanced((pred == labels).astype(float), labels)
    assert est.point() == pytest.approx(balanced_accuracy_score(labels, pred), abs=1e-12)
    W = np.zeros((3, 200))
    picks = [rng.integers(0, 200, 200) for _ in range(3)]
    for row, pick in enumerate(picks):
        np.add.at(W[row], pick, 1)
    for row, pick in enumerate(picks):
        assert est.draws(W)[row] == pytest.approx(balanced_accuracy_score(labels[pick], pred[pick]), abs=1e-12)


def test_holm_adjustment():
    adjusted = uncertainty.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def test_repeat_bootstrap_averages_over_drawn_repeats():
    """Two repeats whose metric is 0.2 and 0.8 everywhere: draws are 0.2, 0.5 or 0.8."""
    reps = [{"m": Mean(np.full(50, x), np.arange(50), 50)} for x in (0.2, 0.8)]
    lo, hi = uncertainty.bootstrap({}, resamples=2000, repeat_groups=reps)["m"]
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.8)


def test_paired_over_repeats_pairs_repeat_with_repeat():
    rng = np.random.default_rng(6)
    reps = [rng.random(100) for _ in range(3)]
    a = [{"m": Mean(v, np.arange(100), 100)} for v in reps]
    same = uncertainty.paired(a, [{"m": Mean(v.copy(), np.arange(100), 100)} for v in reps], 2000)["m"]
    assert same["difference"] == 0 and same["p_value"] == 1.0
    up = uncertainty.paired([{"m": Mean(v + 0.02, np.arange(100), 100)} for v in reps], a, 5000)["m"]
    assert up["difference"] == pytest.approx(0.02) and up["p_value"] < 0.001 and up["low"] > 0


def test_paired_over_repeats_carries_the_training_noise_between_repeats_into_the_p_value():
    """Repeat differences of +0.3, -0.1, -0.1 on 500 identical units: each repeat alone is decisive, but
    which head wins depends on the repeat. The interval spans 0, and the p-value must agree with it
    (a sign flip over the 1,500 (repeat, unit) terms called it p < 0.001)."""
    base = np.random.default_rng(1).random(500)
    a = [{"m": Mean(base + d, np.arange(500), 500)} for d in (0.3, -0.1, -0.1)]
    b = [{"m": Mean(base.copy(), np.arange(500), 500)} for _ in range(3)]
    got = uncertainty.paired(a, b, 4000)["m"]
    assert got["low"] < 0 < got["high"] and got["p_value"] > 0.05
    assert got["difference"] == pytest.approx(0.1 / 3)


def test_board_intervals_include_the_spread_across_repeats():
    """verdicts.intervals hands every repeat to the bootstrap: two repeats that disagree widen the interval
    that one repeat alone makes a point (the guide's rule: intervals include training noise)."""
    from bench.report import verdicts

    n = 40
    hit = {"acc": Mean(np.ones(n), np.arange(n), n)}
    miss = {"acc": Mean(np.zeros(n), np.arange(n), n)}
    assert verdicts.intervals({"h": [hit]}, 400)["h"]["acc"] == (1.0, 1.0)
    low, high = verdicts.intervals({"h": [hit, miss]}, 400)["h"]["acc"]
    assert low < 0.25 and high > 0.75

"""Metrics against clip_benchmark and against textbook definitions."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

from bench.eval import metrics


def test_recall_matches_clip_benchmark_with_several_positives_per_image():
    g = torch.Generator().manual_seed(0)
    n_img, per = 40, 5
    n_txt = n_img * per
    scores = torch.randn(n_img, n_txt, generator=g)  # [images, texts]
    text_image = torch.arange(n_img).repeat_interleave(per)
    positives = torch.zeros(n_img, n_txt, dtype=torch.bool)
    positives[text_image, torch.arange(n_txt)] = True
    scores[positives] += 1.5  # make it a non-trivial retrieval problem
    ours = metrics.retrieval_recalls(scores, positives, ks=(1, 5, 10))
    for k in (1, 5, 10):
        # clip_benchmark takes [texts, images]; a query is a hit when its recall is > 0.
        image_ret = (cb_recall_at_k(scores.T, positives.T, k) > 0).float().mean().item()
        text_ret = (cb_recall_at_k(scores, positives, k) > 0).float().mean().item()
        assert ours[f"image_retrieval_recall@{k}"] == pytest.approx(image_ret, abs=1e-6)
        assert ours[f"text_retrieval_recall@{k}"] == pytest.approx(text_ret, abs=1e-6)
    assert 0 < ours["image_retrieval_recall@1"] < ours["image_retrieval_recall@10"] < 1


def test_recall_streams_in_blocks_with_the_same_answer():
    g = torch.Generator().manual_seed(1)
    scores, positives = torch.randn(300, 50, generator=g), torch.eye(300, 50, dtype=torch.bool)
    positives[50:, 0] = True
    assert metrics.recall_at_k(scores, positives, (1, 5), block=7) == metrics.recall_at_k(scores, positives, (1, 5))


def test_recall_rejects_queries_without_positives():
    with pytest.raises(ValueError, match="at least one positive"):
        metrics.recall_at_k(torch.randn(3, 3), torch.zeros(3, 3, dtype=torch.bool))


def test_correlations_match_pandas():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(30, 40, generator=g)
    b = a + 0.7 * torch.randn(30, 40, generator=g) ** 3
    sa, sb = pd.Series(a.flatten().numpy()), pd.Series(b.flatten().numpy())
    assert metrics.pearson(a, b) == pytest.approx(sa.corr(sb), abs=1e-6)
    assert metrics.spearman(a, b) == pytest.approx(sa.corr(sb, method="spearman"), abs=1e-6)


def test_centred_rmse_ignores_an_additive_constant():
    g = torch.Generator().manual_seed(3)
    a, noise = torch.randn(20, 20, generator=g), torch.randn(20, 20, generator=g)
    assert metrics.centred_rmse(a + 5.0, a) == pytest.approx(0.0, abs=1e-6)
    assert metrics.centred_rmse(a + noise + 3.0, a) == pytest.approx(
        float((noise - noise.mean()).pow(2).mean().sqrt()), rel=1e-6
    )


def test_infonce_and_row_kl_against_hand_computation():
    s = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    rows = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.exp(3) / (math.exp(1) + math.exp(3)))) / 2
    cols = -(math.log(math.exp(2) / (math.exp(2) + math.exp(1))) + math.log(math.exp(3) / (1 + math.exp(3)))) / 2
    assert float(metrics.symmetric_infonce(s.double())) == pytest.approx((rows + cols) / 2, abs=1e-9)
    assert metrics.row_kl(s, s + 4.0) == pytest.approx(0.0, abs=1e-12)
    p = np.exp(s.numpy()) / np.exp(s.numpy()).sum(1, keepdims=True)
    q = np.full((2, 2), 0.5)
    assert metrics.row_kl(s, torch.zeros(2, 2)) == pytest.approx(float((p * np.log(p / q)).sum(1).mean()), abs=1e-6)


def test_accuracy_and_mean_per_class_recall():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [0.0, 2.0, 1.0], [5.0, 0.0, 1.0]])
    targets = torch.tensor([1, 2, 1, 0])
    acc = metrics.topk_accuracy(logits, targets, ks=(1, 2))
    assert acc[1] == pytest.approx(0.75) and acc[2] == pytest.approx(1.0)
    # class 0: 1/1, class 1: 1/2, class 2: 1/1
    assert metrics.mean_per_class_recall(logits, targets, 3) == pytest.approx((1 + 0.5 + 1) / 3)


def test_spearman_uses_average_ranks_on_ties():
    a = torch.tensor([1, 2, 2, 3, 4, 4, 4, 5.0])
    b = torch.tensor([2, 1, 3, 3, 5, 4, 6, 7.0])
    expected = pd.Series(a.numpy()).corr(pd.Series(b.numpy()), method="spearman")
    assert expected == pytest.approx(0.9200, abs=1e-4)  # ordinal ranks would give 0.9524
    assert metrics.spearman(a, b) == pytest.approx(expected, abs=1e-12)
    # Scores clamped to a floor: many ties, as a saturated head produces.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 50, generator=g)
    y = (x + 0.5 * torch.randn(40, 50, generator=g)).clamp(min=0.0)
    assert metrics.spearman(x, y) == pytest.approx(
        pd.Series(x.flatten().numpy()).corr(pd.Series(y.flatten().numpy()), method="spearman"), abs=1e-9
    )


@pytest.mark.parametrize(
    "targets,logits_argmax,n_classes",
    [
        ([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1], 3),  # class 2 never predicted
        ([0, 0, 1, 1], [0, 2, 1, 2], 3),  # class 2 predicted, never a target
        ([1, 1, 1, 2], [1, 0, 1, 2], 4),  # classes 0 and 3 absent from the targets
    ],
)
def test_mean_per_class_recall_equals_sklearn_balanced_accuracy(targets, logits_argmax, n_classes):
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    logits = torch.nn.functional.one_hot(torch.tensor(logits_argmax), n_classes).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted classes absent from y_true
        expected = balanced_accuracy_score(targets, logits_argmax)
    assert metrics.mean_per_class_recall(logits, torch.tensor(targets), n_classes) == pytest.approx(expected, abs=1e-12)


from hypothesis import given, settings  # noqa: E402 (the property tests below share this import)
from hypothesis import strategies as st  # noqa: E402 (after the tests above, which need none of these)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(2, 15), st.integers(0, 2**31 - 1))
def test_recall_is_monotone_in_k_and_reaches_one(n_queries, n_candidates, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_queries, n_candidates, generator=g)
    positives = torch.rand(n_queries, n_candidates, generator=g) < 0.3
    positives[torch.arange(n_queries), torch.randint(n_candidates, (n_queries,), generator=g)] = True
    ks = tuple(range(1, n_candidates + 1))
    r = metrics.recall_at_k(scores, positives, ks)
    assert all(r[k] <= r[k + 1] for k in ks[:-1]) and r[n_candidates] == 1.0
    assert r == metrics.recall_at_k(scores, positives, ks, block=1)  # blocks do not change the answer
    for k in ks:  # clip_benchmark: a query is a hit when its recall at k is > 0
        assert r[k] == pytest.approx((cb_recall_at_k(scores, positives, k) > 0).double().mean().item(), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 60), st.integers(0, 2**31 - 1))
def test_correlations_are_symmetric_and_spearman_ignores_monotone_maps(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=g)
    b = a + torch.randn(n, generator=g)
    assert metrics.pearson(a, b) == pytest.approx(metrics.pearson(b, a), abs=1e-12)
    assert metrics.spearman(a, b) == pytest.approx(metrics.spearman(b, a), abs=1e-12)
    assert metrics.spearman(torch.exp(a), b**3) == pytest.approx(metrics.spearman(a, b), abs=1e-12)


def test_recall_scores_ties_as_the_expectation_over_random_tie_breaking():
    """Brute force: every order of the tied candidates, equally likely."""
    import itertools

    scores = torch.tensor(
        [
            [0.5, 0.9, 0.5, 0.5, 0.1, 0.5],  # g=1 above; tied: 2 negatives, 2 positives
            [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],  # everything tied
            [0.2, 0.8, 0.1, 0.0, 0.0, 0.0],
        ]
    )  # no ties
    positives = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    ks = (1, 2, 3, 4, 5, 6)

    def brute(row):
        s, p = scores[row].tolist(), positives[row].tolist()
        orders = set(itertools.permutations(range(6)))
        valid = [o for o in orders if all(s[o[i]] >= s[o[i + 1]] for i in range(5))]  # every tie order
        return {k: sum(any(p[j] for j in o[:k]) for o in valid) / len(valid) for k in ks}

    expected = {k: sum(brute(r)[k] for r in range(3)) / 3 for k in ks}
    got = metrics.recall_at_k(scores, positives, ks)
    for k in ks:
        assert got[k] == pytest.approx(expected[k], abs=1e-12), k
    assert got[1] == pytest.approx((0 + 1 / 6 + 1) / 3)  # row 0: a negative is strictly above the positives


def test_recall_rejects_mismatched_shapes_and_any_query_without_a_positive():
    with pytest.raises(ValueError, match=r"scores \(3, 4\) and positives \(3, 5\) differ in shape"):
        metrics.recall_at_k(torch.randn(3, 4), torch.ones(3, 5, dtype=torch.bool))
    positives = torch.eye(3, dtype=torch.bool)
    positives[1, 1] = False  # one query of three has no positive
    with pytest.raises(ValueError, match="every query needs at least one positive"):
        metrics.recall_at_k(torch.randn(3, 3), positives)


def test_retrieval_recalls_use_the_ks_asked_for():
    g = torch.Generator().manual_seed(5)
    scores, positives = torch.randn(6, 6, generator=g), torch.eye(6, dtype=torch.bool)
    got = metrics.retrieval_recalls(scores, positives, ks=(2, 3))
    assert set(got) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (2, 3)}
    assert got["text_retrieval_recall@2"] == metrics.recall_at_k(scores, positives, (2,))[2]
    assert got["image_retrieval_recall@3"] == metrics.recall_at_k(scores.T, positives.T, (3,))[3]


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e4])
def test_pearson_is_scale_invariant(scale):
    g = torch.Generator().manual_seed(6)
    a = torch.randn(50, generator=g, dtype=torch.float64)
    b = a + torch.randn(50, generator=g, dtype=torch.float64)
    expected = float(np.corrcoef(a.numpy(), b.numpy())[0, 1])
    assert metrics.pearson(scale * a, b) == pytest.approx(expected, abs=1e-9)
    assert metrics.pearson(a, scale * b) == pytest.approx(expected, abs=1e-9)


def test_accuracy_scores_a_tie_with_the_true_class_as_its_expectation():
    """A class tied with the true one: top-1 is a coin flip (0.5), not whatever order topk picks."""
    logits = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 3.0]])
    targets = torch.tensor([0, 0, 0])
    acc = metrics.topk_accuracy(logits, targets, ks=(1, 2))
    assert acc[1] == pytest.approx((0.5 + 1 + 0) / 3) and acc[2] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics.mean_per_class_recall(logits, targets, 3) == pytest.approx(0.5)


def test_per_item_infonce_and_row_kl_against_scipy_loops():
    """The per-item terms the intervals resample, item by item from their definitions (scipy), and
    their means are the reported metrics."""
    from scipy.special import logsumexp, softmax
    from scipy.stats import entropy

    from bench.eval import metrics

    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 6, generator=g, dtype=torch.float64) * 3
    t = torch.randn(6, 6, generator=g, dtype=torch.float64) * 2
    a = s.numpy()
    want = [(-(a[i, i] - logsumexp(a[i, :])) - (a[i, i] - logsumexp(a[:, i]))) / 2 for i in range(6)]
    got = metrics.infonce_terms(s.float())
    assert got.dtype == torch.float64 and torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-5)
    assert math.isclose(float(metrics.infonce_terms(s).mean()), float(metrics.symmetric_infonce(s)), rel_tol=1e-12)
    kl = [entropy(softmax(t.numpy()[i]), softmax(a[i])) for i in range(6)]
    got = metrics.row_kl_terms(t, s)
    assert torch.allclose(got, torch.tensor(kl, dtype=torch.float64), atol=1e-12)
    assert math.isclose(metrics.row_kl(t, s), sum(kl) / 6, rel_tol=1e-12)
    assert not torch.allclose(metrics.row_kl_terms(s, t), got)  # KL is not symmetric: the argument order matters


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_ranking_rule_refuses_non_finite_scores(bad):
    """NaN compares False, so `s > true` would count a NaN row as a hit at rank 0."""
    from bench.eval import uncertainty

    logits = torch.randn(6, 4)
    logits[2, 1] = bad
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    with pytest.raises(metrics.NonFiniteScores, match="NaN or infinite"):
        metrics.topk_accuracy(logits, targets)
    with pytest.raises(metrics.NonFiniteScores):
        metrics.mean_per_class_recall(logits, targets, 4)
    positives = torch.nn.functional.one_hot(targets, 4).bool()
    with pytest.raises(metrics.NonFiniteScores):
        metrics.recall_at_k(logits, positives)
    with pytest.raises(metrics.NonFiniteScores):
        uncertainty.rank_outcomes(logits, positives)

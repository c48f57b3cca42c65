"""Metrics against clip_benchmark and against textbook definitions."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

from bench import metrics


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
    assert metrics.centred_rmse(a + noise + 3.0, a) == pytest.approx(float((noise - noise.mean()).pow(2).mean().sqrt()), rel=1e-6)


def test_infonce_and_row_kl_against_hand_computation():
    s = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    rows = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.exp(3) / (math.exp(1) + math.exp(3)))) / 2
    cols = -(math.log(math.exp(2) / (math.exp(2) + math.exp(1))) + math.log(math.exp(3) / (1 + math.exp(3)))) / 2
    assert metrics.symmetric_infonce(s) == pytest.approx((rows + cols) / 2, abs=1e-9)
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

"""Every number the suites report is computed here, on score matrices, in float64 where it matters.

Recall@k follows clip_benchmark's definition (a query is a hit when any of its positives is in
its top k; tests check agreement with ``clip_benchmark.metrics.zeroshot_retrieval.recall_at_k``)
but streams over query blocks instead of building a one-hot [queries, k, candidates] tensor, which
at COCO size would take ~10 GB.
"""
from __future__ import annotations

import torch


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, ks=(1, 5, 10), block: int = 4096) -> dict[int, float]:
    """Fraction of query rows with at least one positive among their top-k candidates."""
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape.")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive candidate.")
    kmax = min(max(ks), scores.shape[1])
    hits = {k: 0 for k in ks}
    for start in range(0, scores.shape[0], block):
        top = torch.topk(scores[start:start + block], kmax, dim=1).indices
        found = torch.gather(positives[start:start + block].to(top.device), 1, top)
        first = found.cumsum(dim=1) > 0  # positive seen within the first j+1 results
        for k in ks:
            hits[k] += int(first[:, min(k, kmax) - 1].sum())
    return {k: hits[k] / scores.shape[0] for k in ks}


def retrieval_recalls(scores: torch.Tensor, positives: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Both directions on an [images, texts] matrix, named as clip_benchmark names them."""
    out = {}
    for k, v in recall_at_k(scores.T, positives.T, ks).items():
        out[f"image_retrieval_recall@{k}"] = v  # text query -> images
    for k, v in recall_at_k(scores, positives, ks).items():
        out[f"text_retrieval_recall@{k}"] = v   # image query -> texts
    return out


def symmetric_infonce(scores: torch.Tensor) -> float:
    """Symmetric InfoNCE of a square matrix whose diagonal holds the positives."""
    s = scores.double()
    target = torch.arange(s.shape[0], device=s.device)
    ce = torch.nn.functional.cross_entropy
    return float((ce(s, target) + ce(s.T, target)) / 2)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-300))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(x.double().flatten(), stable=True)
    ranks = torch.empty_like(order, dtype=torch.float64)
    ranks[order] = torch.arange(order.numel(), dtype=torch.float64, device=x.device)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return pearson(_ranks(a), _ranks(b))


def centred_rmse(scores: torch.Tensor, target: torch.Tensor) -> float:
    """RMSE after the best additive constant: InfoNCE only identifies PMI up to one."""
    diff = scores.double() - target.double()
    return float((diff - diff.mean()).pow(2).mean().sqrt())


def row_kl(target_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over rows of KL(softmax(target) || softmax(logits))."""
    p_log = torch.log_softmax(target_logits.double(), dim=1)
    q_log = torch.log_softmax(logits.double(), dim=1)
    return float((p_log.exp() * (p_log - q_log)).sum(dim=1).mean())


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    kmax = min(max(ks), logits.shape[1])
    top = torch.topk(logits, kmax, dim=1).indices
    correct = top == targets.view(-1, 1)
    return {k: float(correct[:, :min(k, kmax)].any(dim=1).double().mean()) for k in ks}


def mean_per_class_recall(logits: torch.Tensor, targets: torch.Tensor, n_classes: int) -> float:
    pred = logits.argmax(dim=1)
    recalls = []
    for c in range(n_classes):
        sel = targets == c
        if bool(sel.any()):
            recalls.append(float((pred[sel] == c).double().mean()))
    return sum(recalls) / len(recalls)

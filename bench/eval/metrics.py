"""Every number the suites report is computed here, on score matrices, in float64 where it matters.

Recall@k follows clip_benchmark's definition (a query is a hit when any of its positives is in
its top k; tests check agreement with ``clip_benchmark.metrics.zeroshot_retrieval.recall_at_k``)
but streams over query blocks instead of building a one-hot [queries, k, candidates] tensor, which
at COCO size would take ~10 GB, and scores ties exactly instead of by a kernel's arbitrary order.
"""

from __future__ import annotations

import torch


class NonFiniteScores(ValueError):
    """A score or logit that is NaN or infinite: a failure of the head, never a hit (``s > true`` is False for
    NaN, so a ranking rule that let it through would count every query as won)."""


def require_finite(scores: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(scores).all()):
        bad = int((~torch.isfinite(scores)).sum())
        raise NonFiniteScores(f"{what}: {bad} of {scores.numel()} values are NaN or infinite; nothing is ranked.")


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, ks=(1, 5, 10), block: int = 4096) -> dict[int, float]:
    """Fraction of query rows with at least one positive among their top-k candidates.

    Ties are scored exactly, as the expectation over a uniformly random order of tied candidates.
    A top-k kernel breaks ties arbitrarily (``topk(k=1)`` and ``topk(k=10)[:, :1]`` may disagree),
    so with duplicate captions or scores clamped to a floor a recall would otherwise depend on the
    kernel. With ``g`` negatives strictly above the best positive, and ``e`` negatives and ``p``
    positives tied with it, the query is a hit at k with probability ``1 - C(e, m) / C(e + p, m)``,
    ``m = k - g`` (0 if m <= 0, 1 if m > e). Without ties this is clip_benchmark's definition.
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape.")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive candidate.")
    require_finite(scores, "retrieval scores")
    hits = {k: 0.0 for k in ks}
    for start in range(0, scores.shape[0], block):
        s = scores[start : start + block].double()
        pos = positives[start : start + block].to(s.device)
        best = s.masked_fill(~pos, float("-inf")).max(dim=1, keepdim=True).values
        above = ((s > best) & ~pos).sum(dim=1).double()  # g
        tied_neg = ((s == best) & ~pos).sum(dim=1).double()  # e
        tied_pos = ((s == best) & pos).sum(dim=1).double()  # p >= 1
        for k in ks:
            hits[k] += float(hit_probability(k - above, tied_neg, tied_pos).sum())
    return {k: hits[k] / scores.shape[0] for k in ks}


def hit_probability(m: torch.Tensor, e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """P(a positive is among the first m of e tied negatives and p tied positives in random order)."""
    mm = m.clamp(min=0).minimum(e)
    log_miss = (torch.lgamma(e + 1) - torch.lgamma(e - mm + 1)) - (
        torch.lgamma(e + p + 1) - torch.lgamma(e + p - mm + 1)
    )
    prob = 1 - log_miss.exp()
    return torch.where(m <= 0, torch.zeros_like(prob), torch.where(m > e, torch.ones_like(prob), prob))


def retrieval_recalls(
    scores: torch.Tensor, positives: torch.Tensor, ks=(1, 5, 10), t2i: torch.Tensor | None = None
) -> dict[str, float]:
    """Both directions on an [images, texts] matrix, named as clip_benchmark names them. Text queries
    rank the columns of ``t2i`` when the head scores that direction differently (FILIP)."""
    out = {}
    for k, v in recall_at_k((scores if t2i is None else t2i).T, positives.T, ks).items():
        out[f"image_retrieval_recall@{k}"] = v  # text query -> images
    for k, v in recall_at_k(scores, positives, ks).items():
        out[f"text_retrieval_recall@{k}"] = v  # image query -> texts
    return out


def symmetric_infonce(logits: torch.Tensor, t2i: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of a square matrix whose diagonal holds the positives: the training loss
    (differentiable, in the logits' dtype) and, on the whole test matrix, a synthetic-suite metric.

    A head with direction-specific scores (FILIP) gives ``t2i`` too: the image-to-text half is the
    row cross-entropy of ``logits``, the text-to-image half the column cross-entropy of ``t2i``."""
    t2i = logits if t2i is None else t2i
    target = torch.arange(logits.shape[0], device=logits.device)
    ce = torch.nn.functional.cross_entropy
    return (ce(logits, target) + ce(t2i.T, target)) / 2


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-300))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rho: Pearson's r of average ranks, so ties (scores clamped to a floor) count as ties."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.double().flatten().cpu().numpy(), method="average"))
    rb = torch.from_numpy(rankdata(b.double().flatten().cpu().numpy(), method="average"))
    return pearson(ra, rb)


def centred_rmse(scores: torch.Tensor, target: torch.Tensor) -> float:
    """RMSE after the best additive constant: InfoNCE only identifies PMI up to one."""
    diff = scores.double() - target.double()
    return float((diff - diff.mean()).pow(2).mean().sqrt())


def row_kl_terms(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per row: KL(softmax(target) || softmax(logits)); ``row_kl`` is their mean."""
    p_log = torch.log_softmax(target_logits.double(), dim=1)
    q_log = torch.log_softmax(logits.double(), dim=1)
    return (p_log.exp() * (p_log - q_log)).sum(dim=1)


def infonce_terms(logits: torch.Tensor, t2i: torch.Tensor | None = None) -> torch.Tensor:
    """Per item i: (its row's cross-entropy + its column's) / 2; ``symmetric_infonce`` is their mean.
    The column is taken from ``t2i`` when the head scores the two directions differently."""
    s = logits.double()
    c = s if t2i is None else t2i.double()
    return -(torch.log_softmax(s, dim=1).diagonal() + torch.log_softmax(c, dim=0).diagonal()) / 2


def row_kl(target_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over rows of KL(softmax(target) || softmax(logits))."""
    return float(row_kl_terms(target_logits, logits).mean())


def _true_class_hits(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Per sample, P(the true class is in the top k), ties broken uniformly at random (as recall@k)."""
    s = logits.double()
    require_finite(s, "classification logits")
    true = s.gather(1, targets.view(-1, 1).to(s.device))
    above = (s > true).sum(dim=1).double()
    tied = (s == true).sum(dim=1).double() - 1
    return hit_probability(k - above, tied, torch.ones_like(tied))


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Top-k accuracy, clip_benchmark's definition; a class tied with the true one counts as the
    expectation over a random order of the ties (a top-k kernel would break them arbitrarily)."""
    return {k: float(_true_class_hits(logits, targets, k).mean()) for k in ks}


def mean_per_class_recall(logits: torch.Tensor, targets: torch.Tensor, n_classes: int) -> float:
    """sklearn's balanced accuracy of the top-1 prediction (clip_benchmark's), ties as in topk_accuracy."""
    hits = _true_class_hits(logits, targets, 1)
    recalls = [float(hits[targets == c].mean()) for c in range(n_classes) if bool((targets == c).any())]
    return sum(recalls) / len(recalls)

"""The exact ``kme_rbf`` score in PyTorch: the reference every faster path is tested against.

s(x, y) = log sum_ij a_i b_j exp(-||u_i - v_j||^2 / (2 sigma^2))
        = logsumexp_ij(log a_i + log b_j + u_i.v_j / sigma^2) - 1/sigma^2   (unit points)

The log-sum-exp form never overflows, and its inner term is one matrix product over all points
(``augment`` appends the log-weights as two extra coordinates), so it streams in blocks under a
memory budget like attention does. This is the path every gradient takes (docs/heads.md).
"""

from __future__ import annotations

import torch

from heads.pointsets import PointSetRep, chunked_score

# exp(-1e4) is exactly 0 in every float format, and unlike -inf it is safe inside a GEMM.
NO_WEIGHT = -1e4


def augment(points: torch.Tensor, log_weights: torch.Tensor, scale: torch.Tensor | None, first: bool) -> torch.Tensor:
    """Append the log-weights as extra coordinates so one GEMM yields u.v/sigma^2 + log a + log b.

    Image sets (``first``) end in (log a, 1) and text sets in (1, log b); ``scale`` (1/sigma^2)
    multiplies one side's points only.
    """
    lw = log_weights.float().clamp(min=NO_WEIGHT).unsqueeze(-1)
    ones = torch.ones_like(lw)
    pts = points.float() if scale is None else points.float() * scale
    return torch.cat([pts, lw, ones] if first else [pts, ones, lw], dim=-1)


def kme_log_inner(
    image_rep: PointSetRep, text_rep: PointSetRep, inv_sigma2: torch.Tensor, memory_budget_mb: float = 256.0
) -> torch.Tensor:
    """Chunked exact score matrix ``[n_images, n_texts]``."""
    U = augment(image_rep.points, image_rep.log_weights, inv_sigma2, first=True)
    V = augment(text_rep.points, text_rep.log_weights, None, first=False)
    n_img, m, d = U.shape
    n_txt, n = V.shape[:2]

    differentiable = torch.is_grad_enabled() and (U.requires_grad or V.requires_grad)

    def block(rs: slice, cs: slice) -> torch.Tensor:
        u, v = U[rs], V[cs]
        logits = (u.reshape(-1, d) @ v.reshape(-1, d).T).view(u.shape[0], m, v.shape[0], n)
        if differentiable:
            return torch.logsumexp(logits, dim=(1, 3))
        # Evaluation: the same log-sum-exp in place, one reduced dim at a time (~2.5x less
        # overhead on top of the GEMM than the generic multi-dim reduction, measured on CPU).
        top = logits.amax(dim=3, keepdim=True).amax(dim=1, keepdim=True)
        logits.sub_(top).exp_()
        return logits.sum(dim=3).sum(dim=1).log_() + top.view(u.shape[0], v.shape[0])

    # The [rows*m, cols*n] logits plus log-sum-exp temporaries: about three float32 copies.
    out = chunked_score(block, n_img, n_txt, bytes_per_pair=12.0 * m * n, budget_mb=memory_budget_mb, device=U.device)
    return out - inv_sigma2

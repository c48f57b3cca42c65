"""KME-CLIP: the log inner product of Gaussian-kernel mean embeddings, computed exactly.

s(x, y) = log sum_ij a_i b_j exp(-||u_i - v_j||^2 / (2 sigma^2))
        = logsumexp_ij(log a_i + log b_j + u_i.v_j / sigma^2) - 1/sigma^2   (unit points)

The log-sum-exp form never overflows, and its inner term is one matrix product over all points,
so it streams in blocks under a memory budget like attention does. On a GPU, evaluation runs the
same sum as one fused Triton kernel (``kme_rbf_fused``) that never writes the logits; this file's
PyTorch path is the reference it is tested against, and the path every gradient takes.
"""
from __future__ import annotations

import logging
import math

import torch

from heads import kme_rbf_fused
from heads.base import SimilarityHead, register_head
from heads.pointsets import Bandwidth, PointSetEncoder, PointSetRep, chunked_score

log = logging.getLogger(__name__)

# exp(-1e4) is exactly 0 in every float format, and unlike -inf it is safe inside a GEMM.
_NO_WEIGHT = -1e4


def _augment(points: torch.Tensor, log_weights: torch.Tensor, scale: torch.Tensor | None, first: bool) -> torch.Tensor:
    """Append the log-weights as extra coordinates so one GEMM yields u.v/sigma^2 + log a + log b."""
    lw = log_weights.float().clamp(min=_NO_WEIGHT).unsqueeze(-1)
    ones = torch.ones_like(lw)
    pts = points.float() if scale is None else points.float() * scale
    return torch.cat([pts, lw, ones] if first else [pts, ones, lw], dim=-1)


def kme_log_inner(image_rep: PointSetRep, text_rep: PointSetRep, inv_sigma2: torch.Tensor,
                  memory_budget_mb: float = 256.0) -> torch.Tensor:
    """Chunked exact score matrix; the reference that any fused kernel is tested against."""
    U = _augment(image_rep.points, image_rep.log_weights, inv_sigma2, first=True)
    V = _augment(text_rep.points, text_rep.log_weights, None, first=False)
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
    out = chunked_score(block, n_img, n_txt, bytes_per_pair=12.0 * m * n,
                        budget_mb=memory_budget_mb, device=U.device)
    return out - inv_sigma2


KERNELS = ("auto", "torch", "triton")


@register_head("kme_rbf")
class KmeRbfHead(SimilarityHead):
    version = 1
    description = "Exact Gaussian-kernel mean embeddings of weighted point sets, log inner product (KME-CLIP)."
    trainable = True

    def __init__(self, image_dim: int, text_dim: int, sigma: float = math.sqrt(0.07),
                 max_inverse_sigma2: float = 100.0, learn_sigma: bool = True,
                 points_used: int | None = None, memory_budget_mb: float = 256.0, kernel: str = "auto"):
        super().__init__(image_dim, text_dim)
        if kernel not in KERNELS:
            raise ValueError(f"kme_rbf: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}.")
        if sigma <= 0 or 1 / sigma**2 > max_inverse_sigma2:
            raise ValueError(f"kme_rbf: sigma must be > 0 with 1/sigma^2 <= {max_inverse_sigma2}, got {sigma}.")
        if memory_budget_mb <= 0:
            raise ValueError(f"kme_rbf: memory_budget_mb must be positive, got {memory_budget_mb}.")
        self.options = {"sigma": sigma, "max_inverse_sigma2": max_inverse_sigma2, "learn_sigma": learn_sigma,
                        "points_used": points_used, "memory_budget_mb": memory_budget_mb, "kernel": kernel}
        out_dim = max(image_dim, text_dim)
        self.image_encoder = PointSetEncoder(image_dim, out_dim, points_used)
        self.text_encoder = PointSetEncoder(text_dim, out_dim, points_used)
        self.bandwidth = Bandwidth(sigma, max_inverse_sigma2, learnable=learn_sigma)
        self.memory_budget_mb = float(memory_budget_mb)
        self.kernel = kernel

    def check_device(self, device: torch.device) -> None:
        if self.kernel == "triton" and not kme_rbf_fused.available(device):
            raise ValueError(f"kernel: triton needs a CUDA device with Triton installed, and this run is on {device}; "
                             "use kernel: auto (the fused kernel where it can run) or kernel: torch.")

    @property
    def sigma(self) -> torch.Tensor:
        return self.bandwidth()

    def encode_image(self, points, mask=None) -> PointSetRep:
        mask = self.check_points(points, mask, self.image_dim, "image")
        return self.image_encoder(points.float(), mask)

    def encode_text(self, points, mask=None) -> PointSetRep:
        mask = self.check_points(points, mask, self.text_dim, "text")
        return self.text_encoder(points.float(), mask)

    def score(self, image_rep: PointSetRep, text_rep: PointSetRep) -> torch.Tensor:
        if self._fused(image_rep, text_rep):
            try:
                return kme_rbf_fused.log_inner(image_rep, text_rep, self.sigma.pow(-2))
            except Exception as exc:  # noqa: BLE001 (auto must never cost a run: fall back, loudly)
                if self.kernel != "auto" or "out of memory" in str(exc):
                    raise
                log.warning("kme_rbf: the fused Triton kernel failed (%s: %s); scoring with the PyTorch path "
                            "instead. Set heads.kme_rbf.kernel: torch to silence this.", type(exc).__name__, exc)
                self._fused_failed = True
        return kme_log_inner(image_rep, text_rep, self.sigma.pow(-2), self.memory_budget_mb)

    def _fused(self, image_rep: PointSetRep, text_rep: PointSetRep) -> bool:
        """auto: the fused kernel for evaluation on a GPU; torch: never; triton: always (else an error)."""
        if self.kernel == "torch":
            return False
        needs_grad = torch.is_grad_enabled() and (image_rep.points.requires_grad or text_rep.points.requires_grad
                                                  or self.bandwidth.log_sigma.requires_grad)
        device = image_rep.points.device
        fits = kme_rbf_fused.supports(image_rep.points.shape[1], text_rep.points.shape[1])
        if self.kernel == "auto":
            return not needs_grad and not getattr(self, "_fused_failed", False) and device.type == "cuda" and fits and kme_rbf_fused.available(device)
        if needs_grad or not fits or not kme_rbf_fused.available(device):
            why = ("it has no backward pass; score under torch.no_grad()" if needs_grad else
                   f"sets are limited to {kme_rbf_fused.MAX_POINTS} points" if not fits else
                   "it needs a CUDA device with Triton installed")
            raise ValueError(f"kme_rbf: kernel='triton' cannot run here: {why}. Use kernel: auto or torch.")
        return True

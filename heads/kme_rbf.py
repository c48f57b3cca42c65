"""KME-CLIP: the log inner product of Gaussian-kernel mean embeddings, computed exactly.

The formula and its stable log-sum-exp form are in ``kme_rbf_reference`` (the PyTorch path,
taken by every gradient) and docs/heads.md. On a GPU, evaluation runs the same sum as one fused
Triton kernel (``kme_rbf_fused``) that never writes the logits; ``kernel`` chooses, and
``last_kernel`` says which one scored last.
"""

from __future__ import annotations

import logging
import math

import torch

from heads import kme_rbf_fused
from heads.base import register_head
from heads.kme_base import KernelMeanHead
from heads.kme_rbf_reference import kme_log_inner
from heads.pointsets import PointSetRep

log = logging.getLogger(__name__)

KERNELS = ("auto", "torch", "triton")


@register_head("kme_rbf")
class KmeRbfHead(KernelMeanHead):
    version = 2  # 2: 1/sigma^2 parametrised as cosine's logit scale; per-position weight bias; out_dim
    description = "Exact Gaussian-kernel mean embeddings of weighted point sets, log inner product (KME-CLIP)."
    trainable = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        sigma: float = math.sqrt(0.07),
        max_inverse_sigma2: float = 100.0,
        learn_sigma: bool = True,
        points_used: int | None = None,
        memory_budget_mb: float = 256.0,
        kernel: str = "auto",
        out_dim: int | None = None,
    ):
        if kernel not in KERNELS:
            raise ValueError(f"kme_rbf: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}.")
        super().__init__(
            image_dim,
            text_dim,
            sigma=sigma,
            max_inverse_sigma2=max_inverse_sigma2,
            learn_sigma=learn_sigma,
            points_used=points_used,
            memory_budget_mb=memory_budget_mb,
            out_dim=out_dim,
        )
        self.kernel = kernel
        self.fused_failed = False  # auto: set when the fused kernel failed once; the PyTorch path is used after
        self.last_kernel: str | None = None  # "triton" or "torch": the path the last score() call took

    def check_device(self, device: torch.device) -> None:
        if self.kernel == "triton" and not kme_rbf_fused.available(device):
            raise ValueError(
                f"kernel: triton needs a CUDA device with Triton installed, and this run is on {device}; "
                "use kernel: auto (the fused kernel where it can run) or kernel: torch."
            )

    def encode_image(self, points, mask=None) -> PointSetRep:
        return self.point_sets("image", points, mask)

    def encode_text(self, points, mask=None) -> PointSetRep:
        return self.point_sets("text", points, mask)

    def score(self, image_rep: PointSetRep, text_rep: PointSetRep) -> torch.Tensor:
        if self.uses_fused_kernel(image_rep, text_rep):
            try:
                scores = kme_rbf_fused.log_inner(image_rep, text_rep, self.inverse_sigma2)
                self.last_kernel = "triton"
                return scores
            except Exception as exc:  # noqa: BLE001 (auto must never cost a run: fall back, loudly)
                if self.kernel != "auto" or "out of memory" in str(exc):
                    raise
                log.warning(
                    "kme_rbf: the fused Triton kernel failed (%s: %s); scoring with the PyTorch path "
                    "instead. Set heads.kme_rbf.kernel: torch to silence this.",
                    type(exc).__name__,
                    exc,
                )
                self.fused_failed = True
        self.last_kernel = "torch"
        return kme_log_inner(image_rep, text_rep, self.inverse_sigma2, self.memory_budget_mb)

    def uses_fused_kernel(self, image_rep: PointSetRep, text_rep: PointSetRep) -> bool:
        """Whether ``score`` of these representations takes the fused kernel. auto: for evaluation on a
        GPU, unless it failed before; torch: never; triton: always (an error where it cannot run)."""
        if self.kernel == "torch":
            return False
        needs_grad = torch.is_grad_enabled() and (
            image_rep.points.requires_grad
            or text_rep.points.requires_grad
            or self.bandwidth.log_inverse_sigma2.requires_grad
        )
        device = image_rep.points.device
        fits = kme_rbf_fused.supports(image_rep.points.shape[1], text_rep.points.shape[1])
        if self.kernel == "auto":
            return (
                not needs_grad
                and not self.fused_failed
                and device.type == "cuda"
                and fits
                and kme_rbf_fused.available(device)
            )
        if needs_grad or not fits or not kme_rbf_fused.available(device):
            why = (
                "it has no backward pass; score under torch.no_grad()"
                if needs_grad
                else f"sets are limited to {kme_rbf_fused.MAX_POINTS} points"
                if not fits
                else "it needs a CUDA device with Triton installed"
            )
            raise ValueError(f"kme_rbf: kernel='triton' cannot run here: {why}. Use kernel: auto or torch.")
        return True

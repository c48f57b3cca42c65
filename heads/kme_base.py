"""What the kernel-mean-embedding heads share, so ``kme_rbf`` and ``kme_rff`` differ only in how
they evaluate the RKHS inner product: the point-set encoders, the Gaussian bandwidth, the
scoring budget and their checks (docs/heads.md)."""

from __future__ import annotations

import torch

from heads.base import SimilarityHead
from heads.pointsets import Bandwidth, PointSetEncoder, PointSetRep


class KernelMeanHead(SimilarityHead):
    """Base of heads that embed a weighted point set as a Gaussian-kernel mean embedding."""

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        *,
        sigma: float,
        max_inverse_sigma2: float,
        learn_sigma: bool,
        points_used: int | None,
        memory_budget_mb: float,
        out_dim: int | None = None,
    ):
        if not sigma > 0 or 1 / sigma**2 > max_inverse_sigma2:
            raise ValueError(f"{self.name}: sigma must be > 0 with 1/sigma^2 <= {max_inverse_sigma2}, got {sigma}.")
        if not memory_budget_mb > 0:
            raise ValueError(f"{self.name}: memory_budget_mb must be positive, got {memory_budget_mb}.")
        if out_dim is not None and int(out_dim) < 1:
            raise ValueError(f"{self.name}: out_dim must be a positive integer or None, got {out_dim!r}.")
        super().__init__(image_dim, text_dim)
        out_dim = self.out_dim = max(image_dim, text_dim) if out_dim is None else int(out_dim)
        self.image_encoder = PointSetEncoder(image_dim, out_dim, points_used)
        self.text_encoder = PointSetEncoder(text_dim, out_dim, points_used)
        self.bandwidth = Bandwidth(sigma, max_inverse_sigma2, learnable=learn_sigma)
        self.memory_budget_mb = float(memory_budget_mb)

    @property
    def sigma(self) -> torch.Tensor:
        return self.bandwidth()

    @property
    def inverse_sigma2(self) -> torch.Tensor:
        return self.bandwidth.inverse_sigma2()

    def point_sets(self, side: str, points: torch.Tensor, mask: torch.Tensor | None) -> PointSetRep:
        """The weighted, unit-norm point set of each input on ``side`` ("image" or "text")."""
        dim, encoder = (self.image_dim, self.image_encoder) if side == "image" else (self.text_dim, self.text_encoder)
        mask = self.check_points(points, mask, dim, side)
        return encoder(points.float(), mask)

    def embed_image(self, points, mask=None) -> torch.Tensor:
        """The weighted mean of the image's unit points: its mean embedding under a linear kernel, the
        first-order part of the Gaussian one (an exact Gaussian KME has no finite vector). The same for
        kme_rbf and kme_rff, whose encoders are the same kind, so a probe gap between them is the training."""
        rep = self.point_sets("image", points, mask)
        return (rep.weights.unsqueeze(-1) * rep.points).sum(1)

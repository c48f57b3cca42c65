"""KME-CLIP with random features: mean embeddings become explicit D-vectors.

With a feature map phi such that E[phi(u).phi(v)] matches the Gaussian kernel, mu_x =
sum_i a_i phi(u_i) is a plain vector, so scoring is one matrix product (and retrieval can use
any maximum-inner-product index). Two maps are offered:

* ``positive`` (default): phi_r(u) = exp(w_r.u / sigma - |u|^2 / (2 sigma^2)) / sqrt(D), with
  w_r ~ N(0, I) drawn in orthogonal blocks. E[phi(u).phi(v)] = exp(u.v / sigma^2), so
  k(u, v) = exp(-1/sigma^2) E[phi(u).phi(v)] for unit points. Features are positive, the inner
  product is positive, and the log is always defined. Mean embeddings are stored as
  ``features * exp(log_scale)`` with the largest feature 1, so nothing overflows at small sigma.
* ``fourier``: phi(u) = sqrt(2/D) cos(w.u / sigma + b), unbiased for k itself but able to go
  negative. The score is log(max(<mu_x, mu_y>, fourier_floor)); the floor (default 1e-4, i.e. a
  kernel value no pair of points near each other falls under) is what keeps the log defined,
  and its gradient is zero below it.

Draws are seeded buffers: saved with the head, never redrawn, identical at evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heads.base import register_head
from heads.kme_base import KernelMeanHead
from heads.kme_rbf_reference import kme_log_inner
from heads.pointsets import PointSetRep, chunk_sizes

_TINY = 1e-30


@dataclass
class FeatureRep:
    """Mean embedding ``features * exp(log_scale)``: ``features`` ``[n, D]``, ``log_scale`` ``[n]``."""

    features: torch.Tensor
    log_scale: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    def mean_over_groups(self, n_groups: int, group_size: int) -> FeatureRep:
        f = self.features.reshape(n_groups, group_size, -1)
        c = self.log_scale.reshape(n_groups, group_size)
        top = c.max(dim=1, keepdim=True).values
        mean = (f * (c - top).exp().unsqueeze(-1)).mean(dim=1)
        return FeatureRep(mean, top.squeeze(1))


def orthogonal_gaussian(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Rows distributed as N(0, I) marginally, exactly orthogonal within each block of ``dim``."""
    blocks = []
    for start in range(0, rows, dim):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # uniform (Haar) orientation
        norms = torch.randn(dim, dim, generator=generator, dtype=torch.float64).norm(dim=1)  # chi_dim
        blocks.append((q.T * norms.unsqueeze(1))[: rows - start])
    return torch.cat(blocks).float()


@register_head("kme_rff")
class KmeRffHead(KernelMeanHead):
    tunable = {"num_features": {"low": 256, "high": 4096, "log": True}}
    version = 2  # 2: 1/sigma^2 parametrised as cosine's logit scale; per-position weight bias; out_dim
    description = (
        "KME-CLIP with explicit random features (positive orthogonal by default): mean embeddings are D-vectors."
    )
    trainable = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        num_features: int = 1024,
        features: str = "positive",
        orthogonal: bool = True,
        seed: int = 0,
        sigma: float = math.sqrt(0.07),
        max_inverse_sigma2: float = 100.0,
        learn_sigma: bool = True,
        points_used: int | None = None,
        fourier_floor: float = 1e-4,
        memory_budget_mb: float = 256.0,
        out_dim: int | None = None,
        output_scale: bool = False,
    ):
        if features not in ("positive", "fourier"):
            raise ValueError(f"kme_rff: features must be 'positive' or 'fourier', got {features!r}.")
        if int(num_features) < 1:
            raise ValueError(f"kme_rff: num_features must be a positive integer, got {num_features!r}.")
        if not fourier_floor > 0:
            raise ValueError(f"kme_rff: fourier_floor must be positive, got {fourier_floor}.")
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
        # A separate learnable scale on the score (log-parametrised like cosine's, starting at 1, at most
        # 100): with max_inverse_sigma2 kept low, the bandwidth stays where random features approximate
        # the kernel and the sharpness of the softmax is learned here instead (docs/heads.md).
        self.log_output_scale = nn.Parameter(torch.zeros(())) if output_scale else None
        out_dim = self.out_dim
        self.kind = features
        self.num_features = int(num_features)
        self.fourier_floor = float(fourier_floor)
        gen = torch.Generator().manual_seed(int(seed))
        if orthogonal:
            omega = orthogonal_gaussian(self.num_features, out_dim, gen)
        else:
            omega = torch.randn(self.num_features, out_dim, generator=gen)
        self.register_buffer("omega", omega)
        self.register_buffer("phase", torch.rand(self.num_features, generator=gen) * 2 * math.pi)

    # -- feature map ----------------------------------------------------------------------
    def _log_features(self, points: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma
        proj = points @ self.omega.T / sigma
        return proj - points.pow(2).sum(-1, keepdim=True) / (2 * sigma**2) - 0.5 * math.log(self.num_features)

    def _fourier_features(self, points: torch.Tensor) -> torch.Tensor:
        proj = points @ self.omega.T / self.sigma + self.phase
        return math.sqrt(2.0 / self.num_features) * torch.cos(proj)

    def feature_map(self, points: torch.Tensor) -> torch.Tensor:
        """phi(points): ``[n, m, d] -> [n, m, D]`` (for verification; scoring stays in log space)."""
        if self.kind == "positive":
            return self._log_features(points).exp()
        return self._fourier_features(points)

    def _embed(self, rep: PointSetRep) -> FeatureRep:
        n, m, _ = rep.points.shape
        # Encode in row blocks so [n, m, D] temporaries stay under the memory budget.
        rows, _ = chunk_sizes(
            n, 1, bytes_per_pair=8.0 * m * self.num_features, budget_bytes=self.memory_budget_mb * 2**20
        )
        feats, scales = [], []
        for r in range(0, n, rows):
            pts, lw = rep.points[r : r + rows], rep.log_weights[r : r + rows]
            if self.kind == "positive":
                log_mu = torch.logsumexp(self._log_features(pts) + lw.unsqueeze(-1), dim=1)
                top = log_mu.max(dim=1).values
                feats.append((log_mu - top.unsqueeze(1)).exp())
                scales.append(top)
            else:
                feats.append((self._fourier_features(pts) * lw.exp().unsqueeze(-1)).sum(dim=1))
                scales.append(torch.zeros(pts.shape[0], device=pts.device))
        return FeatureRep(torch.cat(feats), torch.cat(scales))

    def diagnostics(self, image_points: torch.Tensor, text_points: torch.Tensor) -> dict[str, float]:
        """How far this head's log score is from the exact KME's (kme_rbf's formula) on the same trained
        point sets and bandwidth, over every image-text pair of the sample. Random features approximate
        the kernel only where their variance is small (docs/heads.md): large errors mean the head is a
        different similarity, not an approximation."""
        img, txt = self.point_sets("image", image_points, None), self.point_sets("text", text_points, None)
        exact = kme_log_inner(img, txt, self.inverse_sigma2, self.memory_budget_mb)
        error = (self._log_inner(self._embed(img), self._embed(txt)) - exact).abs().flatten().double()
        return {
            "log_error_median": float(error.median()),
            "log_error_p90": float(error.quantile(0.9)),
            "inverse_sigma2": float(self.inverse_sigma2),
        }

    def encode_image(self, points, mask=None) -> FeatureRep:
        return self._embed(self.point_sets("image", points, mask))

    def encode_text(self, points, mask=None) -> FeatureRep:
        return self._embed(self.point_sets("text", points, mask))

    def score(self, image_rep: FeatureRep, text_rep: FeatureRep) -> torch.Tensor:
        log_inner = self._log_inner(image_rep, text_rep)
        if self.log_output_scale is None:
            return log_inner
        return log_inner * self.log_output_scale.clamp(max=math.log(100.0)).exp()

    def _log_inner(self, image_rep: FeatureRep, text_rep: FeatureRep) -> torch.Tensor:
        inner = image_rep.features @ text_rep.features.T
        floor = _TINY if self.kind == "positive" else self.fourier_floor
        if self.kind != "positive":
            return inner.clamp(min=floor).log()
        row_offset = image_rep.log_scale.unsqueeze(1) - self.inverse_sigma2
        if torch.is_grad_enabled() and inner.requires_grad:
            return inner.clamp(min=floor).log() + row_offset + text_rep.log_scale.unsqueeze(0)
        # Evaluation: in place, so an [N, M] matrix is allocated once, not four times.
        return inner.clamp_(min=floor).log_().add_(row_offset).add_(text_rep.log_scale.unsqueeze(0))

"""Pieces shared by the point-set heads: maps, weights, masks, bandwidth and chunking.

Kept in one place so cosine, kme_rbf and kme_rff differ only in their similarity function,
which is what the benchmark compares; everything else is held equal by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def aligned_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A bias-free map that starts as the identity when the dimensions match.

    Starting at the identity means every trainable head begins from the backbone's own
    geometry; with unequal dimensions a random (semi-)orthogonal map preserves norms instead.
    """
    layer = nn.Linear(in_dim, out_dim, bias=False)
    with torch.no_grad():
        if in_dim == out_dim:
            layer.weight.copy_(torch.eye(out_dim))
        else:
            nn.init.orthogonal_(layer.weight)
    return layer


def last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True per row: the pooled point even when sets are right-padded."""
    p = mask.shape[1]
    positions = torch.arange(p, device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values


def last_real_point(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    idx = last_real_index(mask)
    return points[torch.arange(points.shape[0], device=points.device), idx]


def keep_last(mask: torch.Tensor, k: int | None) -> torch.Tensor:
    """Mask keeping only the last ``k`` real points of each set (all of them when k is None)."""
    if k is None:
        return mask
    from_end = mask.flip(1).to(torch.int64).cumsum(1).flip(1)  # 1 for the last real point
    return mask & (from_end <= int(k))


@dataclass
class PointSetRep:
    """A weighted point set per input: unit ``points`` ``[n, m, d]`` and ``log_weights`` ``[n, m]``.

    Padded points carry log-weight -inf (weight 0) and a finite point, so they drop out of
    every log-sum-exp without producing NaN.
    """

    points: torch.Tensor
    log_weights: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def __len__(self) -> int:
        return self.points.shape[0]

    def mean_over_groups(self, n_groups: int, group_size: int) -> PointSetRep:
        """The mean embedding of each group of consecutive sets, exactly.

        A KME is linear in its weights, so the mean of ``group_size`` embeddings is the union of
        their points with weights divided by ``group_size``.
        """
        n, m, d = self.points.shape
        if n != n_groups * group_size:
            raise ValueError(f"expected {n_groups} x {group_size} sets, got {n}.")
        return PointSetRep(
            self.points.reshape(n_groups, group_size * m, d),
            self.log_weights.reshape(n_groups, group_size * m) - math.log(group_size),
        )


MAX_POSITIONS = 64  # positions counted from the last real point; sets longer than this share the last bias


def positions_from_end(mask: torch.Tensor) -> torch.Tensor:
    """0 for the last real point of each set (the pooled one), 1 for the one before, ..."""
    return (mask.flip(1).to(torch.int64).cumsum(1).flip(1) - 1).clamp(min=0, max=MAX_POSITIONS - 1)


class PointSetEncoder(nn.Module):
    """Linear point map, unit-normalisation, and softmax weights over the real points.

    A point's weight score is a linear function of the point plus a learned bias for its position
    counted from the end (the pooled point is position 0; backbone layers or synthetic draws before
    it). The bias lets a head put its weight on the pooled point, so a KME head contains the cosine
    head; all scores start at zero, so weights start uniform.
    """

    def __init__(self, in_dim: int, out_dim: int, points_used: int | None = None):
        super().__init__()
        self.map = aligned_linear(in_dim, out_dim)
        self.point_score = nn.Linear(in_dim, 1)
        nn.init.zeros_(self.point_score.weight)  # zero scores: uniform weights at the start
        nn.init.zeros_(self.point_score.bias)
        self.position_bias = nn.Parameter(torch.zeros(MAX_POSITIONS))
        if points_used is not None and int(points_used) < 1:
            raise ValueError(f"points_used must be a positive integer or None, got {points_used!r}.")
        self.points_used = None if points_used is None else int(points_used)

    def forward(self, points: torch.Tensor, mask: torch.Tensor) -> PointSetRep:
        if self.points_used is not None and bool(mask.all()):
            # Unpadded sets: drop unused points instead of masking them, so they cost nothing.
            points, mask = points[:, -self.points_used :], mask[:, -self.points_used :]
        mask = keep_last(mask, self.points_used)
        safe = points.masked_fill(~mask.unsqueeze(-1), 0.0)  # garbage in padding never reaches a gradient
        unit = nn.functional.normalize(self.map(safe), dim=-1, eps=1e-12)
        logits = self.point_score(safe).squeeze(-1) + self.position_bias[positions_from_end(mask)]
        logits = logits.masked_fill(~mask, float("-inf"))
        return PointSetRep(unit, torch.log_softmax(logits, dim=1))


class Bandwidth(nn.Module):
    """Learnable Gaussian bandwidth, parametrised exactly as the cosine head's logit scale.

    1/sigma^2 plays the part of CLIP's logit scale t, so it is stored as log(1/sigma^2), starts at
    1/0.07 and is clamped at ``max_inverse`` like log t. Storing log sigma instead made 1/sigma^2 =
    exp(-2 log sigma) move twice as fast under the same learning rate, a head-unrelated advantage
    measured at 0.010-0.018 infonce_excess (docs/heads.md). With one point per side kme_rbf and
    cosine now follow the same training trajectory (tested).
    """

    def __init__(self, init_sigma: float, max_inverse: float, learnable: bool):  # every head passes all three
        super().__init__()
        value = torch.tensor(math.log(1.0 / init_sigma**2), dtype=torch.float32)
        if learnable:
            self.log_inverse_sigma2 = nn.Parameter(value)
        else:
            self.register_buffer("log_inverse_sigma2", value)
        self.max_log_inverse = math.log(max_inverse)

    def inverse_sigma2(self) -> torch.Tensor:
        return self.log_inverse_sigma2.clamp(max=self.max_log_inverse).exp()

    def forward(self) -> torch.Tensor:
        """sigma itself."""
        return self.inverse_sigma2().rsqrt()


def chunk_sizes(n_rows: int, n_cols: int, bytes_per_pair: float, budget_bytes: float) -> tuple[int, int]:
    """Row and column chunk sizes whose pairwise temporaries fit ``budget_bytes``.

    Columns are split only when a single row of every column would not fit, so the common case
    is one wide product per row block, which is what matrix-multiply kernels like best.
    """
    budget_pairs = max(1, int(budget_bytes // max(bytes_per_pair, 1.0)))
    cols = max(1, min(n_cols, budget_pairs))
    rows = max(1, min(n_rows, budget_pairs // cols))
    return rows, cols


def chunked_score(
    pair_fn, n_rows: int, n_cols: int, bytes_per_pair: float, budget_mb: float, device, dtype=torch.float32
) -> torch.Tensor:
    """Fill an ``[n_rows, n_cols]`` matrix block by block with ``pair_fn(row_slice, col_slice)``."""
    rows, cols = chunk_sizes(n_rows, n_cols, bytes_per_pair, budget_mb * 2**20)
    if rows >= n_rows and cols >= n_cols:
        return pair_fn(slice(0, n_rows), slice(0, n_cols))
    out = torch.empty(n_rows, n_cols, device=device, dtype=dtype)
    for r in range(0, n_rows, rows):
        for c in range(0, n_cols, cols):
            rs, cs = slice(r, min(r + rows, n_rows)), slice(c, min(c + cols, n_cols))
            out[rs, cs] = pair_fn(rs, cs)
    return out

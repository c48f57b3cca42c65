"""MERU (Desai et al., ICML 2023): image and text on a Lorentz hyperboloid, scored by minus the distance.

The pooled point is mapped (as the cosine head's), scaled by a learnable alpha per side, lifted by the
exponential map at the origin onto the hyperboloid of curvature -c, and two inputs score
``-scale * d_L``. MERU's entailment loss is not part of the shared protocol: every head trains under
the same contrastive loss, so this row is MERU's similarity, not MERU's full training objective.
Zero-shot prompts are averaged in the tangent space (before lifting), where averaging is linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.pointsets import aligned_linear, last_real_point

SINH_LIMIT = math.asinh(2.0**15)  # MERU clamps the exponential map's argument here, so sinh never overflows


@dataclass
class TangentRep:
    """Tangent vectors at the hyperboloid's origin (already scaled by alpha), ``[n, d]``."""

    vectors: torch.Tensor

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def mean_over_groups(self, n_groups: int, group_size: int) -> TangentRep:
        return TangentRep(self.vectors.reshape(n_groups, group_size, -1).mean(dim=1))


def lift(v: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exponential map at the origin: (space part, time part) of the point on the hyperboloid."""
    sqrt_c = c.sqrt()
    r = v.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    x = (sqrt_c * r).clamp(max=SINH_LIMIT)
    space = torch.sinh(x) * v / (sqrt_c * r)
    time = torch.sqrt(1 / c + space.pow(2).sum(-1))
    return space, time


def lorentz_distance(space_a, time_a, space_b, time_b, c: torch.Tensor) -> torch.Tensor:
    """``[n, m]`` geodesic distances: acosh(max(-c <a, b>_L, 1 + 1e-8)) / sqrt(c)."""
    inner = space_a @ space_b.T - time_a[:, None] * time_b[None, :]
    return torch.acosh((-c * inner).clamp(min=1 + 1e-8)) / c.sqrt()


@register_head("meru")
class MeruHead(SimilarityHead):
    version = 2  # 2: curvature bounds relative to its start, [c0/10, 10 c0], as MERU (the same at c0 = 1)
    description = "MERU: pooled points lifted onto a Lorentz hyperboloid; score = -scale * geodesic distance."

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        init_curvature: float = 1.0,
        min_curvature: float | None = None,
        max_curvature: float | None = None,
        learn_curvature: bool = True,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        out_dim: int | None = None,
    ):
        super().__init__(image_dim, text_dim)
        if not init_curvature > 0:
            raise ValueError(f"meru: init_curvature must be > 0, got {init_curvature!r}.")
        # MERU bounds the curvature relative to where it starts: [c0 / 10, 10 c0]; None takes that bound.
        min_curvature = init_curvature / 10 if min_curvature is None else min_curvature
        max_curvature = init_curvature * 10 if max_curvature is None else max_curvature
        if not 0 < min_curvature <= init_curvature <= max_curvature:
            raise ValueError(
                f"meru: need 0 < min_curvature <= init_curvature <= max_curvature, got "
                f"{min_curvature}, {init_curvature}, {max_curvature}."
            )
        if not 0 < init_logit_scale <= max_logit_scale:
            raise ValueError(
                f"meru: need 0 < init_logit_scale <= max_logit_scale, got {init_logit_scale}, {max_logit_scale}."
            )
        if out_dim is not None and int(out_dim) < 1:
            raise ValueError(f"meru: out_dim must be a positive integer or None, got {out_dim!r}.")
        out_dim = max(image_dim, text_dim) if out_dim is None else int(out_dim)
        self.image_map = aligned_linear(image_dim, out_dim)
        self.text_map = aligned_linear(text_dim, out_dim)
        # As MERU: log-parametrised, alpha starts at 1/sqrt(d) and is clamped at 1.
        self.log_alpha_image = nn.Parameter(torch.tensor(-0.5 * math.log(out_dim)))
        self.log_alpha_text = nn.Parameter(torch.tensor(-0.5 * math.log(out_dim)))
        curvature = torch.tensor(math.log(init_curvature))
        if learn_curvature:
            self.log_curvature = nn.Parameter(curvature)
        else:
            self.register_buffer("log_curvature", curvature)
        self.log_range = (math.log(min_curvature), math.log(max_curvature))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)

    @property
    def curvature(self) -> torch.Tensor:
        return self.log_curvature.clamp(*self.log_range).exp()

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

    def _encode(self, points, mask, dim, side, layer, log_alpha) -> TangentRep:
        mask = self.check_points(points, mask, dim, side)
        pooled = last_real_point(points, mask).to(layer.weight.dtype)  # float16 caches: computed in the head's dtype
        return TangentRep(layer(pooled) * log_alpha.clamp(max=0.0).exp())

    def encode_image(self, points, mask=None) -> TangentRep:
        return self._encode(points, mask, self.image_dim, "image", self.image_map, self.log_alpha_image)

    def embed_image(self, points, mask=None) -> torch.Tensor:
        """The tangent vector at the origin (before lifting): the Euclidean vector MERU's geometry starts from."""
        return self.encode_image(points, mask).vectors

    def encode_text(self, points, mask=None) -> TangentRep:
        return self._encode(points, mask, self.text_dim, "text", self.text_map, self.log_alpha_text)

    def score(self, image_rep: TangentRep, text_rep: TangentRep) -> torch.Tensor:
        c = self.curvature
        a, b = lift(image_rep.vectors, c), lift(text_rep.vectors, c)
        return -self.logit_scale * lorentz_distance(*a, *b, c)

"""CLIP's similarity: one embedding per input, cosine times a learnable logit scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.pointsets import aligned_linear, last_real_point


@dataclass
class VectorRep:
    """Unit vectors ``[n, d]``, one per input."""

    vectors: torch.Tensor

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def mean_over_groups(self, n_groups: int, group_size: int) -> VectorRep:
        # CLIP's zero-shot recipe: average the unit prompt embeddings, then renormalise.
        mean = self.vectors.reshape(n_groups, group_size, -1).mean(dim=1)
        return VectorRep(nn.functional.normalize(mean, dim=-1))


@register_head("cosine")
class CosineHead(SimilarityHead):
    version = 2  # 2: out_dim
    description = "CLIP: linear map of the pooled point, unit-normalised, times a learnable logit scale."
    trainable = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        out_dim: int | None = None,
    ):
        super().__init__(image_dim, text_dim)
        if not 0 < init_logit_scale <= max_logit_scale:
            raise ValueError(
                f"cosine: need 0 < init_logit_scale <= max_logit_scale, got {init_logit_scale}, {max_logit_scale}."
            )
        if out_dim is not None and int(out_dim) < 1:
            raise ValueError(f"cosine: out_dim must be a positive integer or None, got {out_dim!r}.")
        out_dim = max(image_dim, text_dim) if out_dim is None else int(out_dim)
        self.image_map = aligned_linear(image_dim, out_dim)
        self.text_map = aligned_linear(text_dim, out_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

    def _encode(self, points, mask, dim, side, layer) -> VectorRep:
        mask = self.check_points(points, mask, dim, side)
        pooled = last_real_point(points, mask)
        return VectorRep(nn.functional.normalize(layer(pooled.float()), dim=-1))

    def encode_image(self, points, mask=None) -> VectorRep:
        return self._encode(points, mask, self.image_dim, "image", self.image_map)

    def embed_image(self, points, mask=None) -> torch.Tensor:
        """The mapped unit vector the cosine is taken of."""
        return self.encode_image(points, mask).vectors

    def encode_text(self, points, mask=None) -> VectorRep:
        return self._encode(points, mask, self.text_dim, "text", self.text_map)

    def score(self, image_rep: VectorRep, text_rep: VectorRep) -> torch.Tensor:
        # One [n, m] product is already the memory floor: no chunking needed.
        return self.logit_scale * image_rep.vectors @ text_rep.vectors.T

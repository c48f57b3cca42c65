"""The untouched backbone similarity: the reference row every trained head is compared with."""

from __future__ import annotations

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.cosine import VectorRep
from heads.pointsets import last_real_point


@register_head("clip_frozen")
class ClipFrozenHead(SimilarityHead):
    version = 1
    description = "Backbone's own cosine similarity, identity maps, fixed logit scale 100 (as clip_benchmark)."
    trainable = False

    def __init__(self, image_dim: int, text_dim: int, logit_scale: float = 100.0):
        super().__init__(image_dim, text_dim)
        if image_dim != text_dim:
            raise ValueError(
                f"clip_frozen compares backbone embeddings directly, so image_dim and text_dim must match "
                f"(got {image_dim} and {text_dim}); use a trainable head such as 'cosine' for unequal dimensions."
            )
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def _encode(self, points, mask, side) -> VectorRep:
        mask = self.check_points(points, mask, self.image_dim, side)
        return VectorRep(nn.functional.normalize(last_real_point(points, mask).float(), dim=-1))

    def encode_image(self, points, mask=None) -> VectorRep:
        return self._encode(points, mask, "image")

    def embed_image(self, points, mask=None) -> torch.Tensor:
        """The backbone's own image embedding (CLIP_benchmark's linear-probe feature)."""
        return self.encode_image(points, mask).vectors

    def encode_text(self, points, mask=None) -> VectorRep:
        return self._encode(points, mask, "text")

    def score(self, image_rep: VectorRep, text_rep: VectorRep) -> torch.Tensor:
        return self.logit_scale * image_rep.vectors @ text_rep.vectors.T

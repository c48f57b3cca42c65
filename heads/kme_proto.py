"""Prototype KME head, and its cosine control.

Where the theory predicts a gap (docs/heads.md), a point set's points must be able to stand for
topics, with weights that depend on the whole input. ``kme_proto`` gives each side P learned
prototype points in the joint space, shared by every input; an input's weights over them are a
softmax of a linear map of its pooled point. Its similarity is the exact log inner product of the
two Gaussian KMEs:

    s(x, y) = log sum_ij a_i(x) b_j(y) k(q_i, r_j),   k(q, r) = exp((q.r - 1) / sigma^2),

the log of a bilinear form a^T K b with a fixed positive kernel matrix K, which can express
exp PMI = sum_z p(z|x) p(z|y) / p(z) once P covers the topics. ``proto_cosine`` is the same encoder
read out as one vector (the weighted mean of the prototypes, unit-normalised) under a cosine: a gap
between the two is the similarity function's, not the encoder's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.cosine import VectorRep
from heads.pointsets import Bandwidth, aligned_linear, last_real_point


@dataclass
class ProtoRep:
    """Log-weights ``[n, P]`` over the side's prototypes; ``prototypes`` ``[P, d]`` unit vectors."""

    log_weights: torch.Tensor
    prototypes: torch.Tensor

    def __len__(self) -> int:
        return self.log_weights.shape[0]

    @classmethod
    def concat(cls, reps: list[ProtoRep]) -> ProtoRep:
        """Batches of one encoder share its prototypes: only the weights are stacked."""
        return cls(torch.cat([r.log_weights for r in reps]), reps[0].prototypes)

    def mean_over_groups(self, n_groups: int, group_size: int) -> ProtoRep:
        """The mean KME of each group: its weights averaged (a KME is linear in its weights)."""
        lw = self.log_weights.reshape(n_groups, group_size, -1)
        return ProtoRep(torch.logsumexp(lw, dim=1) - math.log(group_size), self.prototypes)


class PrototypeEncoder(nn.Module):
    """P prototypes mapped into the joint space; weights = softmax of a linear map of the pooled point."""

    def __init__(self, in_dim: int, out_dim: int, prototypes: int):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(prototypes, in_dim) / math.sqrt(in_dim))
        self.map = aligned_linear(in_dim, out_dim)
        self.weight_map = nn.Linear(in_dim, prototypes)
        nn.init.zeros_(self.weight_map.weight)  # uniform weights at the start
        nn.init.zeros_(self.weight_map.bias)

    def points(self) -> torch.Tensor:
        return nn.functional.normalize(self.map(self.prototypes), dim=-1)

    def forward(self, points: torch.Tensor, mask: torch.Tensor) -> ProtoRep:
        pooled = last_real_point(points, mask).float()
        return ProtoRep(torch.log_softmax(self.weight_map(pooled), dim=-1), self.points())


def proto_log_inner(a: ProtoRep, b: ProtoRep, inverse_sigma2: torch.Tensor) -> torch.Tensor:
    """log(a^T K b) for every pair, exactly: shifted to the row, column and kernel maxima so every
    factor lies in (0, 1], then one float64 product (K's entries can be far below float32's range)."""
    L = (a.prototypes @ b.prototypes.T - 1) * inverse_sigma2  # log K, [P, Q]
    ca = a.log_weights.max(dim=1, keepdim=True).values
    cb = b.log_weights.max(dim=1, keepdim=True).values
    top = L.max()
    A = (a.log_weights - ca).double().exp()
    B = (b.log_weights - cb).double().exp()
    K = (L - top).double().exp()
    inner = (A @ K) @ B.T
    return (inner.log() + (ca + cb.T + top).double()).to(a.log_weights.dtype)


class _PrototypeHead(SimilarityHead):
    tunable = {"prototypes": {"low": 4, "high": 64, "log": True}}

    def __init__(self, image_dim: int, text_dim: int, prototypes: int, out_dim: int | None):
        if int(prototypes) < 1:
            raise ValueError(f"{self.name}: prototypes must be a positive integer, got {prototypes!r}.")
        if out_dim is not None and int(out_dim) < 1:
            raise ValueError(f"{self.name}: out_dim must be a positive integer or None, got {out_dim!r}.")
        super().__init__(image_dim, text_dim)
        out_dim = max(image_dim, text_dim) if out_dim is None else int(out_dim)
        self.image_encoder = PrototypeEncoder(image_dim, out_dim, int(prototypes))
        self.text_encoder = PrototypeEncoder(text_dim, out_dim, int(prototypes))

    def embed_image(self, points, mask=None) -> torch.Tensor:
        """The weighted mean of the image's prototypes (proto_cosine's vector before normalisation)."""
        rep = self._encode("image", points, mask)
        return rep.log_weights.exp() @ rep.prototypes

    def _encode(self, side: str, points, mask) -> ProtoRep:
        dim, encoder = (self.image_dim, self.image_encoder) if side == "image" else (self.text_dim, self.text_encoder)
        return encoder(points, self.check_points(points, mask, dim, side))


@register_head("kme_proto")
class KmeProtoHead(_PrototypeHead):
    version = 1
    description = (
        "Learned prototype points per side, input-dependent weights, exact log inner product of Gaussian KMEs."
    )
    trainable = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        prototypes: int = 16,
        sigma: float = math.sqrt(0.07),
        max_inverse_sigma2: float = 100.0,
        learn_sigma: bool = True,
        out_dim: int | None = None,
    ):
        if not sigma > 0 or 1 / sigma**2 > max_inverse_sigma2:
            raise ValueError(f"kme_proto: sigma must be > 0 with 1/sigma^2 <= {max_inverse_sigma2}, got {sigma}.")
        super().__init__(image_dim, text_dim, prototypes, out_dim)
        self.bandwidth = Bandwidth(sigma, max_inverse_sigma2, learnable=learn_sigma)

    def encode_image(self, points, mask=None) -> ProtoRep:
        return self._encode("image", points, mask)

    def encode_text(self, points, mask=None) -> ProtoRep:
        return self._encode("text", points, mask)

    def score(self, image_rep: ProtoRep, text_rep: ProtoRep) -> torch.Tensor:
        return proto_log_inner(image_rep, text_rep, self.bandwidth.inverse_sigma2())


@register_head("proto_cosine")
class ProtoCosineHead(_PrototypeHead):
    version = 1
    description = (
        "kme_proto's encoder read out as one vector (weighted mean of the prototypes) under a cosine: its control."
    )
    trainable = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        prototypes: int = 16,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        out_dim: int | None = None,
    ):
        if not 0 < init_logit_scale <= max_logit_scale:
            raise ValueError(
                f"proto_cosine: need 0 < init_logit_scale <= max_logit_scale, got {init_logit_scale}, "
                f"{max_logit_scale}."
            )
        super().__init__(image_dim, text_dim, prototypes, out_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)

    def _vector(self, side: str, points, mask) -> VectorRep:
        rep = self._encode(side, points, mask)
        return VectorRep(nn.functional.normalize(rep.log_weights.exp() @ rep.prototypes, dim=-1))

    def encode_image(self, points, mask=None) -> VectorRep:
        return self._vector("image", points, mask)

    def encode_text(self, points, mask=None) -> VectorRep:
        return self._vector("text", points, mask)

    def score(self, image_rep: VectorRep, text_rep: VectorRep) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp() * image_rep.vectors @ text_rep.vectors.T

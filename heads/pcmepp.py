"""PCME++ (Chun, ICLR 2024; naver-ai/pcmepp): each input is a Gaussian, compared by the closed-form
sampled distance.

Each side maps its pooled point to a mean ``mu`` (unit-normalised, as ``encode_*(normalize=True)`` in
the authors' ``hf_clip.py``) and a log-variance ``log s^2`` (one per dimension). The closed-form sampled
distance of two Gaussians is ``||mu_v - mu_t||^2 + sum(s_v^2 + s_t^2)``, and the logit is
``-a * distance + b`` with ``a`` (negative_scale) and ``b`` (shift) learned, as in the authors'
``ClosedFormSampledDistanceLoss`` (both initialised to 5). The protocol's loss trains it; the authors'
own loss (binary cross-entropy of the logits against the matched pairs) is ``train.loss: pcme_bce``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.pointsets import aligned_linear, last_real_point


@dataclass
class GaussianRep:
    """Unit means ``[n, d]`` and the sum of the variances ``[n]`` (all the distance needs of them)."""

    mean: torch.Tensor
    variance_sum: torch.Tensor

    def __len__(self) -> int:
        return self.mean.shape[0]

    def mean_over_groups(self, n_groups: int, group_size: int) -> GaussianRep:
        # A class's prompts: the mean of their means (renormalised) and of their variances.
        mean = self.mean.reshape(n_groups, group_size, -1).mean(dim=1)
        return GaussianRep(nn.functional.normalize(mean, dim=-1), self.variance_sum.reshape(n_groups, -1).mean(1))


@register_head("pcmepp")
class PCMEPPHead(SimilarityHead):
    version = 1
    description = "PCME++: Gaussian embeddings; logit -a (||mu_v - mu_t||^2 + sum of variances) + b."
    trainable = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        init_shift: float = 5.0,
        init_negative_scale: float = 5.0,
        init_log_variance: float = -5.0,
        out_dim: int | None = None,
    ):
        super().__init__(image_dim, text_dim)
        if out_dim is not None and int(out_dim) < 1:
            raise ValueError(f"pcmepp: out_dim must be a positive integer or None, got {out_dim!r}.")
        out_dim = max(image_dim, text_dim) if out_dim is None else int(out_dim)
        self.image_map = aligned_linear(image_dim, out_dim)
        self.text_map = aligned_linear(text_dim, out_dim)
        # The uncertainty maps start constant (weight 0): every input begins with the same variance, so the
        # first ranking is the mean's (the authors' uncertainty heads are new layers on a pretrained encoder).
        self.image_log_var = self._variance_map(image_dim, out_dim, init_log_variance)
        self.text_log_var = self._variance_map(text_dim, out_dim, init_log_variance)
        self.shift = nn.Parameter(torch.tensor(float(init_shift)))
        self.negative_scale = nn.Parameter(torch.tensor(float(init_negative_scale)))

    @staticmethod
    def _variance_map(in_dim: int, out_dim: int, init: float) -> nn.Linear:
        layer = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.fill_(float(init))
        return layer

    def _encode(self, points, mask, dim, side, mean_map, var_map) -> GaussianRep:
        mask = self.check_points(points, mask, dim, side)
        pooled = last_real_point(points, mask).to(mean_map.weight.dtype)
        mean = nn.functional.normalize(mean_map(pooled), dim=-1)
        return GaussianRep(mean, var_map(pooled).exp().sum(dim=-1))  # sum of s^2 over dimensions

    def encode_image(self, points, mask=None) -> GaussianRep:
        return self._encode(points, mask, self.image_dim, "image", self.image_map, self.image_log_var)

    def encode_text(self, points, mask=None) -> GaussianRep:
        return self._encode(points, mask, self.text_dim, "text", self.text_map, self.text_log_var)

    def embed_image(self, points, mask=None) -> torch.Tensor:
        """The mean: the distance ranks images of one text by it and by their variance."""
        return self.encode_image(points, mask).mean

    def score(self, image_rep: GaussianRep, text_rep: GaussianRep) -> torch.Tensor:
        # ||mu_v - mu_t||^2 = 2 - 2 mu_v . mu_t for unit means: one [n, m] product, no [n, m, d] temporary.
        mean_distance = (2 - 2 * image_rep.mean @ text_rep.mean.T).clamp(min=0)
        distance = mean_distance + image_rep.variance_sum[:, None] + text_rep.variance_sum[None, :]
        return -self.negative_scale * distance + self.shift

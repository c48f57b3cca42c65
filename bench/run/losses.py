"""Training losses as modules: ``train.loss`` picks one, and every head of a run trains under it.

A loss may have parameters of its own (SigLIP's temperature and bias). They are trained with the
head's, under the same optimiser and schedule, averaged across ranks under torchrun and saved in
the head's weights file under ``loss.`` (bench/run/train.py). The loss is part of ``train``, hence
of the protocol hash, so a table never mixes heads trained under different losses.

Each loss takes the head's two direction matrices ``(i2t, t2i)`` (the same tensor for most heads;
``SimilarityHead.score_directions``), rows are images and the diagonal holds the positives.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.core.registry import Registry
from bench.eval.metrics import symmetric_infonce

LOSSES: Registry[type[ContrastiveLoss]] = Registry("loss")


def register_loss(name: str):
    return LOSSES.register(name)


def get_loss(name: str) -> type[ContrastiveLoss]:
    return LOSSES.get(name)


class ContrastiveLoss(nn.Module):
    name: str = ""
    description: str = ""
    # Whether the loss is minimised by scores equal to PMI up to a constant per row and column, which
    # the synthetic suite's infonce_excess and pmi_row_kl measure the distance from.
    infonce_optimum: bool = False

    def forward(self, i2t: torch.Tensor, t2i: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_loss("infonce")
class InfoNCELoss(ContrastiveLoss):
    description = "symmetric InfoNCE (CLIP): cross-entropy over the batch, image-to-text rows and text-to-image columns"
    infonce_optimum = True

    def forward(self, i2t, t2i):
        return symmetric_infonce(i2t, None if t2i is i2t else t2i)


@register_loss("siglip")
class SigLIPLoss(ContrastiveLoss):
    """open_clip's SigLipLoss on a head's scores: z_ij = t s_ij + b, loss = -(1/B) sum_ij log sigmoid(l_ij z_ij)
    with l = +1 on the diagonal and -1 elsewhere. t is stored as log t (init log 10, clamped at 100, as a
    CLIP logit scale) and b starts at -10. A head with two direction matrices gets the mean of the two
    losses. The sigmoid loss is not minimised at PMI up to row constants; see ``infonce_optimum``."""

    description = "SigLIP: a sigmoid per pair, learnable temperature (init 10) and bias (init -10)"

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0, max_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.max_log_scale = math.log(max_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def one(self, scores: torch.Tensor) -> torch.Tensor:
        z = self.scale * scores + self.bias
        labels = 2 * torch.eye(scores.shape[0], scores.shape[1], device=scores.device, dtype=z.dtype) - 1
        return -nn.functional.logsigmoid(labels * z).sum() / scores.shape[0]

    def forward(self, i2t, t2i):
        return self.one(i2t) if t2i is i2t else (self.one(i2t) + self.one(t2i)) / 2


@register_loss("pcme_bce")
class PCMEBCELoss(ContrastiveLoss):
    """PCME++'s own loss (naver-ai/pcmepp ``ClosedFormSampledDistanceLoss``): binary cross-entropy of each
    pair's logit against matched (the diagonal) or not, doubled because the image-to-text and
    text-to-image losses are the same (the authors' "efficient implementation"); a head with two
    direction matrices gets the sum of both. No parameters of its own: PCME++'s shift and scale are
    the head's. Meant for heads whose scores are logits with a bias (pcmepp)."""

    description = "PCME++'s loss: binary cross-entropy per pair on the head's logits (no temperature or bias)"

    def one(self, scores: torch.Tensor) -> torch.Tensor:
        matched = torch.eye(scores.shape[0], scores.shape[1], device=scores.device, dtype=scores.dtype)
        return nn.functional.binary_cross_entropy_with_logits(scores, matched)

    def forward(self, i2t, t2i):
        return 2 * self.one(i2t) if t2i is i2t else self.one(i2t) + self.one(t2i)


def build(name: str) -> ContrastiveLoss:
    return get_loss(name)()

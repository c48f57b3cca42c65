"""Smooth-Chamfer set similarity (DivE: Kim et al., WACV 2023): each side's points find the other side's
by a log-sum-exp, averaged over the points and over both directions.

    s(X, Y) = 1/2 [ mean_x LSE_a(x . Y) + mean_y LSE_a(X . y) ],  LSE_a(z) = log sum exp(a z) / a

on unit points (``smooth_chamfer_matching`` in the authors' ``src/functional.py``), times a learnable
logit scale. It is the closest control for KME's log-sum-exp over all pairs: KME sums over both sides
at once, Smooth-Chamfer takes one side's log-sum-exp per point and averages. It reads the same point
sets as kme_rbf (the pooled points of the last layers, weighted equally; padding masked), scored in
blocks under ``memory_budget_mb``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.filip import TokenRep, token_head_options  # unit points, a mask, and prompt groups scored one by one
from heads.pointsets import aligned_linear, chunked_score, keep_last


@register_head("smooth_chamfer")
class SmoothChamferHead(SimilarityHead):
    version = 1
    description = "Smooth-Chamfer (DivE): mean over each side's points of a log-sum-exp over the other side's."
    trainable = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        temperature: float = 16.0,
        num_points: int | None = None,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        out_dim: int | None = None,
        memory_budget_mb: float = 256.0,
    ):
        super().__init__(image_dim, text_dim)
        if not temperature > 0:
            raise ValueError(f"smooth_chamfer: temperature must be > 0, got {temperature!r}.")
        out_dim = token_head_options(
            "smooth_chamfer", init_logit_scale, max_logit_scale, out_dim, memory_budget_mb, image_dim, text_dim
        )
        self.temperature = float(temperature)
        self.num_points = num_points
        self.image_map = aligned_linear(image_dim, out_dim)
        self.text_map = aligned_linear(text_dim, out_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)
        self.memory_budget_mb = float(memory_budget_mb)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

    def _encode(self, points, mask, dim, side, layer) -> TokenRep:
        mask = keep_last(self.check_points(points, mask, dim, side), self.num_points)
        safe = points.to(layer.weight.dtype).masked_fill(~mask.unsqueeze(-1), 0.0)
        return TokenRep(nn.functional.normalize(layer(safe), dim=-1), mask)

    def encode_image(self, points, mask=None) -> TokenRep:
        return self._encode(points, mask, self.image_dim, "image", self.image_map)

    def encode_text(self, points, mask=None) -> TokenRep:
        return self._encode(points, mask, self.text_dim, "text", self.text_map)

    def _block(self, x: TokenRep, y: TokenRep, rows: slice, cols: slice) -> torch.Tensor:
        u, um = x.points[rows], x.mask[rows]
        v, vm = y.points[cols], y.mask[cols]
        a = self.temperature
        sims = a * torch.einsum("amd,bkd->abmk", u, v)  # [a, b, image points, text points]
        neg = torch.finfo(sims.dtype).min
        per_image_point = sims.masked_fill(~vm[None, :, None, :], neg).logsumexp(dim=3) / a  # [a, b, m]
        per_text_point = sims.masked_fill(~um[:, None, :, None], neg).logsumexp(dim=2) / a  # [a, b, k]
        image_side = (per_image_point * um[:, None, :]).sum(-1) / um.sum(-1, keepdim=True)
        text_side = (per_text_point * vm[None, :, :]).sum(-1) / vm.sum(-1)[None, :]
        return (image_side + text_side) / 2

    def score(self, image_rep: TokenRep, text_rep: TokenRep) -> torch.Tensor:
        n, m = image_rep.points.shape[0], text_rep.points.shape[0]
        per_pair = image_rep.points.shape[1] * text_rep.points.shape[1] * image_rep.points.element_size() * 3
        scores = chunked_score(
            lambda rs, cs: self._block(image_rep, text_rep, rs, cs),
            n,
            m,
            per_pair,
            self.memory_budget_mb,
            image_rep.points.device,
            image_rep.points.dtype,
        )
        if text_rep.group > 1:  # prompts of one class: their scores averaged (as FILIP's prompt ensemble)
            scores = scores.view(n, -1, text_rep.group).mean(-1)
        return self.logit_scale * scores

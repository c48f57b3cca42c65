"""FLAIR-style text-conditioned pooling (Xiao et al., CVPR 2025; ExplainableML/flair): the image is its
tokens, and each text pools them its own way.

For a text ``t`` (its pooled point, mapped and unit-normalised) and an image's unit tokens ``V``
``[L, d]``, attention pooling ``a = softmax(t W_q (V W_k)^T / sqrt(d))`` gives a text-specific image
vector ``a V``, and the score is its cosine with ``t``, times a learnable logit scale. The score
depends on both sides jointly, so nothing per image can be cached across texts: ``score`` works on
blocks of (image, text) pairs under ``memory_budget_mb`` without ever forming the ``[images, texts,
d]`` pooled vectors. Per block, with ``P = a`` ``[a, b, L]``:

    a V . t     = sum_l P_l (v_l . t)                        (one [a, L, b] product)
    ||a V||^2   = sum_{l,l'} P_l P_l' (v_l . v_l')           (the image's [L, L] Gram matrix)

It has no single vector per image (``embed_image``), so the linear probe lists it as skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.filip import TokenRep, token_head_options
from heads.pointsets import aligned_linear, chunked_score, last_real_point


@dataclass
class QueryRep:
    """Unit text vectors ``[m, d]``; ``group`` > 1: consecutive rows are the prompts of one class, scored
    one by one and averaged."""

    vectors: torch.Tensor
    group: int = 1

    def __len__(self) -> int:
        return self.vectors.shape[0] // self.group

    @classmethod
    def concat(cls, reps: list[QueryRep]) -> QueryRep:
        return cls(torch.cat([r.vectors for r in reps]), reps[0].group)

    def mean_over_groups(self, n_groups: int, group_size: int) -> QueryRep:
        if self.vectors.shape[0] != n_groups * group_size or self.group != 1:
            raise ValueError(f"expected {n_groups} x {group_size} ungrouped texts, got {self.vectors.shape[0]}.")
        return QueryRep(self.vectors, group_size)


@register_head("flair")
class FlairHead(SimilarityHead):
    version = 1
    description = "FLAIR-style: each text attention-pools the image tokens; cosine of the pooled vector with the text."
    readout = "tokens"

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        out_dim: int | None = None,
        memory_budget_mb: float = 512.0,
    ):
        super().__init__(image_dim, text_dim)
        out_dim = token_head_options(
            "flair", init_logit_scale, max_logit_scale, out_dim, memory_budget_mb, image_dim, text_dim
        )
        self.image_map = aligned_linear(image_dim, out_dim)
        self.text_map = aligned_linear(text_dim, out_dim)
        # W_q and W_k start at the identity: the first pooling weighs each token by its similarity to the text.
        self.query_map = aligned_linear(out_dim, out_dim)
        self.key_map = aligned_linear(out_dim, out_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)
        self.memory_budget_mb = float(memory_budget_mb)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

    def encode_image(self, points, mask=None) -> TokenRep:
        mask = self.check_points(points, mask, self.image_dim, "image")
        safe = points.to(self.image_map.weight.dtype).masked_fill(~mask.unsqueeze(-1), 0.0)
        return TokenRep(nn.functional.normalize(self.image_map(safe), dim=-1), mask)

    def encode_text(self, points, mask=None) -> QueryRep:
        mask = self.check_points(points, mask, self.text_dim, "text")
        pooled = last_real_point(points, mask).to(self.text_map.weight.dtype)
        return QueryRep(nn.functional.normalize(self.text_map(pooled), dim=-1))

    def _block(self, img: TokenRep, txt: QueryRep, rows: slice, cols: slice) -> torch.Tensor:
        v, vm = img.points[rows], img.mask[rows]  # [a, L, d], [a, L]
        t = txt.vectors[cols]  # [b, d]
        keys = self.key_map(v)  # [a, L, d]
        queries = self.query_map(t)  # [b, d]
        logits = torch.einsum("bd,ald->abl", queries, keys) / math.sqrt(v.shape[-1])  # [a, b, L]
        attn = logits.masked_fill(~vm[:, None, :], float("-inf")).softmax(dim=-1)  # [a, b, L]
        along = torch.einsum("ald,bd->abl", v, t)  # v_l . t
        gram = torch.einsum("ald,akd->alk", v, v)  # [a, L, L]
        numerator = (attn * along).sum(-1)  # [a, b]
        norm2 = (torch.einsum("abl,alk->abk", attn, gram) * attn).sum(-1)  # ||a V||^2
        return numerator / norm2.clamp(min=1e-12).sqrt()

    def score(self, image_rep: TokenRep, text_rep: QueryRep) -> torch.Tensor:
        n, m = image_rep.points.shape[0], text_rep.vectors.shape[0]
        per_pair = image_rep.points.shape[1] * image_rep.points.element_size() * 5  # [a, b, L] temporaries
        out = chunked_score(
            lambda rs, cs: self._block(image_rep, text_rep, rs, cs),
            n,
            m,
            per_pair,
            self.memory_budget_mb,
            image_rep.points.device,
            image_rep.points.dtype,
        )
        if text_rep.group > 1:  # prompts of one class: their scores averaged
            out = out.view(n, -1, text_rep.group).mean(-1)
        return self.logit_scale * out

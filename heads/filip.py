"""FILIP (Yao et al., ICLR 2022): token-wise late interaction, a different score for each direction.

An image token finds its most similar caption token, a caption token its most similar image token;
the image-to-text score averages the first over the image's tokens, the text-to-image score the
second over the caption's real tokens. The image's class token (its pooled point, the last) is
dropped as in FILIP; text padding is masked. Scored in blocks under ``memory_budget_mb`` so the
``[images, texts, image tokens, text tokens]`` products never exist whole at COCO size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.pointsets import aligned_linear, chunk_sizes, last_real_index


@dataclass
class TokenRep:
    """Unit tokens ``[n, t, d]`` with a mask ``[n, t]`` (True: real). ``group`` > 1: consecutive sets are
    the prompts of one class, scored one by one and averaged (FILIP's prompt ensemble)."""

    points: torch.Tensor
    mask: torch.Tensor
    group: int = 1
    ragged_fields = ("points", "mask")  # padded to a common width when gathered across ranks (not a field)

    def __len__(self) -> int:
        return self.points.shape[0] // self.group

    @classmethod
    def concat(cls, reps: list[TokenRep]) -> TokenRep:
        width = max(r.points.shape[1] for r in reps)
        pad = lambda t, v: nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1]), value=v)  # noqa: E731 (a one-line helper, used just below)
        return cls(
            torch.cat([pad(r.points, 0.0) for r in reps]), torch.cat([pad(r.mask, False) for r in reps]), reps[0].group
        )

    def mean_over_groups(self, n_groups: int, group_size: int) -> TokenRep:
        if self.points.shape[0] != n_groups * group_size or self.group != 1:
            raise ValueError(f"expected {n_groups} x {group_size} ungrouped sets, got {self.points.shape[0]}.")
        return TokenRep(self.points, self.mask, group_size)


def token_head_options(
    name: str, init_logit_scale, max_logit_scale, out_dim, memory_budget_mb, image_dim: int, text_dim: int
) -> int:
    """The options FILIP, FLAIR and Smooth-Chamfer share, checked (the message names the head); returns
    out_dim resolved (default: the wider side)."""
    if not 0 < init_logit_scale <= max_logit_scale:
        raise ValueError(
            f"{name}: need 0 < init_logit_scale <= max_logit_scale, got {init_logit_scale}, {max_logit_scale}."
        )
    if out_dim is not None and int(out_dim) < 1:
        raise ValueError(f"{name}: out_dim must be a positive integer or None, got {out_dim!r}.")
    if not memory_budget_mb > 0:
        raise ValueError(f"{name}: memory_budget_mb must be > 0, got {memory_budget_mb!r}.")
    return max(image_dim, text_dim) if out_dim is None else int(out_dim)


@register_head("filip")
class FilipHead(SimilarityHead):
    version = 1
    description = "FILIP: mean over one side's tokens of the max similarity to the other's; i2t and t2i differ."
    readout = "tokens"
    memory_budget_mb = 512.0

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        init_logit_scale: float = math.exp(3.8665),
        max_logit_scale: float = 100.0,
        out_dim: int | None = None,
        memory_budget_mb: float = 512.0,
    ):
        super().__init__(image_dim, text_dim)
        out_dim = token_head_options(
            "filip", init_logit_scale, max_logit_scale, out_dim, memory_budget_mb, image_dim, text_dim
        )
        self.image_map = aligned_linear(image_dim, out_dim)
        self.text_map = aligned_linear(text_dim, out_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)
        self.memory_budget_mb = float(memory_budget_mb)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

    def _tokens(self, points, mask, layer) -> TokenRep:
        safe = points.to(layer.weight.dtype).masked_fill(~mask.unsqueeze(-1), 0.0)
        return TokenRep(nn.functional.normalize(layer(safe), dim=-1), mask)

    def encode_image(self, points, mask=None) -> TokenRep:
        mask = self.check_points(points, mask, self.image_dim, "image")
        # Drop the class token (the last real point) unless it is the only one.
        single = mask.sum(dim=1) == 1
        last = nn.functional.one_hot(last_real_index(mask), mask.shape[1]).bool() & ~single.unsqueeze(1)
        return self._tokens(points, mask & ~last, self.image_map)

    def encode_text(self, points, mask=None) -> TokenRep:
        mask = self.check_points(points, mask, self.text_dim, "text")
        return self._tokens(points, mask, self.text_map)

    @staticmethod
    def _block(img: TokenRep, txt: TokenRep, rows: slice, cols: slice, both: bool) -> tuple[torch.Tensor, torch.Tensor]:
        u, um = img.points[rows], img.mask[rows]
        v, vm = txt.points[cols], txt.mask[cols]
        sims = torch.einsum("atd,bsd->abts", u, v)  # [a, b, image tokens, text tokens]
        neg = torch.finfo(sims.dtype).min
        best_text = sims.masked_fill(~vm[None, :, None, :], neg).amax(dim=3)  # [a, b, t]
        s_i = (best_text * um[:, None, :]).sum(-1) / um.sum(-1, keepdim=True)
        if not both:
            return s_i, s_i
        best_image = sims.masked_fill(~um[:, None, :, None], neg).amax(dim=2)  # [a, b, s]
        s_t = (best_image * vm[None, :, :]).sum(-1) / vm.sum(-1)[None, :]
        return s_i, s_t

    def score_directions(self, image_rep: TokenRep, text_rep: TokenRep, both: bool = True):
        n, m = image_rep.points.shape[0], text_rep.points.shape[0]
        per_pair = image_rep.points.shape[1] * text_rep.points.shape[1] * image_rep.points.element_size() * 3
        rows, cols = chunk_sizes(n, m, per_pair, self.memory_budget_mb * 2**20)
        if rows >= n and cols >= m:
            s_i, s_t = self._block(image_rep, text_rep, slice(0, n), slice(0, m), both)
        else:
            s_i = image_rep.points.new_empty(n, m)
            s_t = image_rep.points.new_empty(n, m)
            for r in range(0, n, rows):
                for c in range(0, m, cols):
                    rs, cs = slice(r, min(r + rows, n)), slice(c, min(c + cols, m))
                    s_i[rs, cs], s_t[rs, cs] = self._block(image_rep, text_rep, rs, cs, both)
        scale = self.logit_scale
        s_i, s_t = scale * s_i, scale * s_t
        if text_rep.group > 1:  # prompts of one class: their scores averaged
            s_i = s_i.view(n, -1, text_rep.group).mean(-1)
            s_t = s_t.view(n, -1, text_rep.group).mean(-1)
        return s_i, s_t

    def score(self, image_rep: TokenRep, text_rep: TokenRep) -> torch.Tensor:
        """The image-to-text scores (what an image query, and zero-shot, ranks by)."""
        return self.score_directions(image_rep, text_rep, both=False)[0]

"""WPSE (Sony, ICLR 2025): weighted point-set embeddings, a linear kernel plus a random-feature Gaussian one.

Each input is its tokens, unit-normalised, with real-valued weights ``w_i = alpha tanh(h_i / alpha)``
from a linear map of each token (so a token may count negatively, unlike a KME's softmax weights).
Two inputs score ``scale * (a1 <mean_i w_i u_i, mean_j w'_j v_j> + a2 <mean_i w_i phi(u_i), mean_j w'_j
phi(v_j)>)`` with random Fourier features ``phi(x) = sqrt(2/D) cos(W x + b)``, ``W ~ N(0, sigma^-2 I)``,
``b ~ U[0, 2 pi]``: no log, unlike kme_rbf. The features are redrawn at every training step (from the
seed and the step, so every rank draws the same) and fixed by the seed for evaluation.

Choices of ours where the definition is silent: the weight map starts at weight 0 and bias 1, so every
token starts at weight tanh(1/alpha) alpha ~ 1 (a plain mean of the tokens, as the other heads start
uniform); ``out_dim`` (default none, as WPSE) adds a linear point map before normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heads.base import SimilarityHead, register_head
from heads.pointsets import aligned_linear


@dataclass
class WeightedMeans:
    """Per input: the weighted mean of its unit points ``[n, d]`` and of their random features ``[n, D]``."""

    linear: torch.Tensor
    features: torch.Tensor

    def __len__(self) -> int:
        return self.linear.shape[0]

    def mean_over_groups(self, n_groups: int, group_size: int) -> WeightedMeans:
        """Both parts are linear in the weights, so the mean of the prompts' embeddings is exact."""
        return WeightedMeans(
            self.linear.reshape(n_groups, group_size, -1).mean(1),
            self.features.reshape(n_groups, group_size, -1).mean(1),
        )


def fourier_draw(
    dim: int, num_features: int, sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(num_features, dim, generator=generator) / sigma
    b = torch.rand(num_features, generator=generator) * (2 * math.pi)
    return w, b


@register_head("wpse")
class WpseHead(SimilarityHead):
    version = 1
    description = "WPSE: real-weighted mean embeddings of tokens, 2/3 linear + 1/3 random-feature Gaussian kernel."
    readout = "tokens"

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        alpha: float = 100.0,
        sigma: float = 0.5,
        num_features: int = 1024,
        linear_weight: float = 2 / 3,
        kernel_weight: float = 1 / 3,
        init_logit_scale: float = 1 / 0.07,
        min_logit_scale: float = 1.0,
        max_logit_scale: float = 100.0,
        out_dim: int | None = None,
        seed: int = 0,
    ):
        super().__init__(image_dim, text_dim)
        if not alpha > 0 or not sigma > 0:
            raise ValueError(f"wpse: alpha and sigma must be > 0, got {alpha}, {sigma}.")
        if int(num_features) < 1:
            raise ValueError(f"wpse: num_features must be a positive integer, got {num_features!r}.")
        if not 0 < min_logit_scale <= init_logit_scale <= max_logit_scale:
            raise ValueError(
                f"wpse: need 0 < min_logit_scale <= init_logit_scale <= max_logit_scale, got "
                f"{min_logit_scale}, {init_logit_scale}, {max_logit_scale}."
            )
        if out_dim is not None and int(out_dim) < 1:
            raise ValueError(f"wpse: out_dim must be a positive integer or None, got {out_dim!r}.")
        if image_dim != text_dim and out_dim is None:
            out_dim = max(image_dim, text_dim)  # the two sides must meet in one space
        self.image_map = None if out_dim is None else aligned_linear(image_dim, int(out_dim))
        self.text_map = None if out_dim is None else aligned_linear(text_dim, int(out_dim))
        dim = image_dim if out_dim is None else int(out_dim)
        self.image_weight = self._weight_map(image_dim)
        self.text_weight = self._weight_map(text_dim)
        self.alpha, self.sigma, self.seed = float(alpha), float(sigma), int(seed)
        self.linear_weight, self.kernel_weight = float(linear_weight), float(kernel_weight)
        self.dim, self.num_features = dim, int(num_features)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.log_scale_range = (math.log(min_logit_scale), math.log(max_logit_scale))
        w, b = fourier_draw(dim, self.num_features, self.sigma, torch.Generator().manual_seed(self.seed))
        self.register_buffer("eval_w", w, persistent=False)  # made again from the seed: not in the weights file
        self.register_buffer("eval_b", b, persistent=False)
        self._step_draw: tuple[torch.Tensor, torch.Tensor] | None = None
        self.step_drawn: int | None = None

    @staticmethod
    def _weight_map(dim: int) -> nn.Linear:
        layer = nn.Linear(dim, 1)
        nn.init.zeros_(layer.weight)
        nn.init.ones_(layer.bias)
        return layer

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(*self.log_scale_range).exp()

    def begin_train_step(self, step: int) -> None:
        """New random features for this step, the same on every rank (seeded by seed and step)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step) + 1)
        w, b = fourier_draw(self.dim, self.num_features, self.sigma, g)
        self._step_draw = (w.to(self.eval_w.device), b.to(self.eval_b.device))
        self.step_drawn = int(step)

    def fourier(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's draw while training (once a step has begun), the seed's draw otherwise."""
        if self.training and self._step_draw is not None:
            return self._step_draw
        return self.eval_w, self.eval_b

    def _encode(self, points, mask, dim, side, point_map, weight_map) -> WeightedMeans:
        mask = self.check_points(points, mask, dim, side)
        safe = points.to(weight_map.weight.dtype).masked_fill(~mask.unsqueeze(-1), 0.0)
        unit = nn.functional.normalize(safe if point_map is None else point_map(safe), dim=-1)
        weights = self.alpha * torch.tanh(weight_map(safe).squeeze(-1) / self.alpha) * mask
        count = mask.sum(dim=1, keepdim=True).float()
        w, b = (t.to(unit.dtype) for t in self.fourier())
        phi = math.sqrt(2.0 / self.num_features) * torch.cos(unit @ w.T + b)
        return WeightedMeans(
            (weights.unsqueeze(-1) * unit).sum(1) / count, (weights.unsqueeze(-1) * phi).sum(1) / count
        )

    def encode_image(self, points, mask=None) -> WeightedMeans:
        return self._encode(points, mask, self.image_dim, "image", self.image_map, self.image_weight)

    def embed_image(self, points, mask=None) -> torch.Tensor:
        """[sqrt(a1) linear mean, sqrt(a2) feature mean]: the vector whose inner product is WPSE's similarity."""
        rep = self.encode_image(points, mask)
        return torch.cat([math.sqrt(self.linear_weight) * rep.linear, math.sqrt(self.kernel_weight) * rep.features], -1)

    def encode_text(self, points, mask=None) -> WeightedMeans:
        return self._encode(points, mask, self.text_dim, "text", self.text_map, self.text_weight)

    def score(self, image_rep: WeightedMeans, text_rep: WeightedMeans) -> torch.Tensor:
        similarity = (
            self.linear_weight * image_rep.linear @ text_rep.linear.T
            + self.kernel_weight * image_rep.features @ text_rep.features.T
        )
        return self.logit_scale * similarity

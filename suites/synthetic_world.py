"""A generated world in which the true PMI between an image and a text is known exactly.

Image and text are conditionally independent given a latent topic z, the assumption under which
exp PMI(x, y) = sum_z p(z|x) p(z|y) / p(z) is an inner product (docs/heads.md, docs/protocol.md). A topic is a
distribution over shared concepts; an input is a set of noisy draws around concepts' centres,
plus a pooled point (the mean), as a backbone would give. Text centres are image centres under a
fixed orthogonal map (aligned towers); an optional smooth invertible bend makes the geometry
non-linear without changing any posterior (a bijection carries no information about z).

Modes (docs/protocol.md, "synthetic"), which change what a head is shown, never how PMI is defined:
* ``draws``: every draw comes from the input's topic; the points are the bent draws.
* ``posterior``: the same draws, but each point is the centred log posterior over topics of one
  draw alone, and the pooled point that of the whole set, which is exact. The encoder has no
  inference left to do, so heads differ only by what their similarity can express.
* ``one_relevant``: one draw comes from the topic, the others (distractors) from concepts drawn
  uniformly, whatever the topic, at a random position. Then p(x | z) is proportional to
  sum_i p(x_i | z) / q(x_i): a sum over points, the structure a kernel mean embedding has and a
  mean of the points (the pooled point) dilutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)
MODES = ("draws", "posterior", "one_relevant")
LOG_FLOOR = -30.0  # posterior points: log-probabilities below e^-30 carry nothing float32 can use


@dataclass
class Side:
    centres: torch.Tensor  # [C, d]
    bend_matrix: torch.Tensor  # [d, d], orthogonal
    bend_offset: torch.Tensor  # [d]


@dataclass
class Sample:
    points: torch.Tensor  # [n, points + 1, d]: bent draws, then their mean (the pooled point)
    raw: torch.Tensor  # [n, points, d]: draws before the bend, for the exact posterior
    topics: torch.Tensor  # [n]


class World:
    def __init__(
        self,
        topics: int,
        concepts: int,
        dim: int,
        points: int,
        noise: float,
        centre_scale: float,
        prior_concentration: float,
        topic_concentration: float,
        bend: float,
        seed: int,
        mode: str = "draws",
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
        if not 0 <= bend < 1:
            raise ValueError(f"bend must be in [0, 1) so the map stays invertible, got {bend}.")
        if min(topics, concepts, dim, points) < 1 or noise <= 0:
            raise ValueError("topics, concepts, dim and points must be positive and noise > 0.")
        g = torch.Generator().manual_seed(int(seed))
        rng = np.random.default_rng(int(seed))  # numpy's Dirichlet takes a seeded generator

        def dirichlet(alpha, shape):
            return torch.from_numpy(rng.dirichlet(np.full(shape[-1], float(alpha)), size=shape[:-1] or None))

        self.log_prior = dirichlet(prior_concentration, (topics,)).log()
        self.log_concepts = dirichlet(topic_concentration, (topics, concepts)).log()  # log p(c | z)
        image_centres = centre_scale * torch.randn(concepts, dim, generator=g, dtype=torch.float64)
        align = _orthogonal(dim, g)
        self.image = Side(image_centres, _orthogonal(dim, g), torch.randn(dim, generator=g, dtype=torch.float64))
        self.text = Side(
            image_centres @ align.T, _orthogonal(dim, g), torch.randn(dim, generator=g, dtype=torch.float64)
        )
        self.noise, self.points, self.bend, self.dim = float(noise), int(points), float(bend), int(dim)
        self.n_topics, self.mode = int(topics), mode

    @property
    def point_dim(self) -> int:
        """The dimension of the points a head sees: the topics' count in posterior mode."""
        return self.n_topics if self.mode == "posterior" else self.dim

    # -- sampling --------------------------------------------------------------------------
    def sample_topics(self, n: int, g: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.log_prior.exp(), n, replacement=True, generator=g)

    def sample(self, topics: torch.Tensor, side: str, g: torch.Generator) -> Sample:
        s = getattr(self, side)
        probs = self.log_concepts.exp()[topics]  # [n, C]
        concepts = torch.multinomial(probs, self.points, replacement=True, generator=g)  # [n, m]
        if self.mode == "one_relevant":  # draw 0 stays relevant; the rest become distractors, then all are shuffled
            distractors = torch.randint(0, len(s.centres), concepts.shape, generator=g)
            concepts = torch.cat([concepts[:, :1], distractors[:, 1:]], dim=1)
            order = torch.argsort(torch.rand(concepts.shape, generator=g), dim=1)
            concepts = concepts.gather(1, order)
        raw = s.centres[concepts] + self.noise * torch.randn(
            *concepts.shape, self.dim, generator=g, dtype=torch.float64
        )
        if self.mode == "posterior":
            per_draw = self.point_log_likelihood(raw, side) + self.log_prior
            pts = torch.cat([per_draw, self.log_likelihood(raw, side).unsqueeze(1) + self.log_prior], dim=1)
            pts = (pts - torch.logsumexp(pts, dim=2, keepdim=True)).clamp(min=LOG_FLOOR)
            pts = pts - pts.mean(dim=2, keepdim=True)  # centred: scale-free, and still a bijection of the posterior
            return Sample(pts.float(), raw, topics)
        bent = self._bend(raw, s)
        pts = torch.cat([bent, bent.mean(dim=1, keepdim=True)], dim=1)
        return Sample(pts.float(), raw, topics)

    def _bend(self, x: torch.Tensor, s: Side) -> torch.Tensor:
        # x + bend * tanh(Q x + b): the added term is bend-Lipschitz with bend < 1, so the map is invertible.
        return x + self.bend * torch.tanh(x @ s.bend_matrix.T + s.bend_offset)

    # -- exact inference ---------------------------------------------------------------------
    def _log_gauss(self, raw: torch.Tensor, side: str) -> torch.Tensor:
        """log N(x_i; centre_c, noise^2 I) ``[n*m, C]`` for the unbent draws (the bend's Jacobian does not
        depend on z)."""
        sq = torch.cdist(raw.reshape(-1, self.dim), getattr(self, side).centres).pow(2)
        return -sq / (2 * self.noise**2) - 0.5 * self.dim * (LOG_2PI + 2 * math.log(self.noise))

    def point_log_likelihood(self, raw: torch.Tensor, side: str) -> torch.Tensor:
        """log p(x_i | z) ``[n, m, K]`` of each draw as a draw of topic z."""
        log_n = self._log_gauss(raw, side)
        per_point = torch.logsumexp(log_n.unsqueeze(1) + self.log_concepts.unsqueeze(0), dim=2)  # [n*m, K]
        return per_point.view(raw.shape[0], raw.shape[1], -1)

    def log_likelihood(self, raw: torch.Tensor, side: str) -> torch.Tensor:
        """log p(x | z) ``[n, K]`` up to a term that does not depend on z."""
        per_point = self.point_log_likelihood(raw, side)
        if self.mode != "one_relevant":
            return per_point.sum(dim=1)
        # One relevant draw at a uniformly random position, the others from q (concepts uniform):
        # p(x | z) = prod_j q(x_j) * (1/m) sum_i p(x_i | z) / q(x_i).
        log_q = torch.logsumexp(self._log_gauss(raw, side), dim=1).view(raw.shape[0], raw.shape[1]) - math.log(
            len(getattr(self, side).centres)
        )
        return torch.logsumexp(per_point - log_q.unsqueeze(-1), dim=1)

    def log_posterior(self, raw: torch.Tensor, side: str) -> torch.Tensor:
        joint = self.log_likelihood(raw, side) + self.log_prior
        return joint - torch.logsumexp(joint, dim=1, keepdim=True)

    def pmi(self, log_post_images: torch.Tensor, log_post_texts: torch.Tensor) -> torch.Tensor:
        """PMI(x, y) = log sum_z p(z|x) p(z|y) / p(z), ``[n_images, n_texts]``, in log space."""
        terms = log_post_images.unsqueeze(1) + log_post_texts.unsqueeze(0) - self.log_prior
        return torch.logsumexp(terms, dim=2)


def _orthogonal(dim: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))

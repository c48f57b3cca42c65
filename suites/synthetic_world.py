"""A generated world in which the true PMI between an image and a text is known exactly.

Image and text are conditionally independent given a latent topic z, the assumption under which
exp PMI(x, y) = sum_z p(z|x) p(z|y) / p(z) is an inner product (docs/heads.md, docs/protocol.md). A topic is a
distribution over shared concepts; an input is a set of noisy draws around its concepts' centres,
plus a pooled point (the mean), as a backbone would give. Text centres are image centres under a
fixed orthogonal map (aligned towers); an optional smooth invertible bend makes the geometry
non-linear without changing any posterior (a bijection carries no information about z).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Side:
    centres: torch.Tensor      # [C, d]
    bend_matrix: torch.Tensor  # [d, d], orthogonal
    bend_offset: torch.Tensor  # [d]


@dataclass
class Sample:
    points: torch.Tensor   # [n, points + 1, d]: bent draws, then their mean (the pooled point)
    raw: torch.Tensor      # [n, points, d]: draws before the bend, for the exact posterior
    topics: torch.Tensor   # [n]


class World:
    def __init__(self, topics: int, concepts: int, dim: int, points: int, noise: float, centre_scale: float,
                 prior_concentration: float, topic_concentration: float, bend: float, seed: int):
        if not 0 <= bend < 1:
            raise ValueError(f"bend must be in [0, 1) so the map stays invertible, got {bend}.")
        if min(topics, concepts, dim, points) < 1 or noise <= 0:
            raise ValueError("topics, concepts, dim and points must be positive and noise > 0.")
        g = torch.Generator().manual_seed(int(seed))
        rng = np.random.default_rng(int(seed))  # numpy's Dirichlet takes a seeded generator
        dirichlet = lambda alpha, shape: torch.from_numpy(rng.dirichlet(np.full(shape[-1], float(alpha)), size=shape[:-1] or None))  # noqa: E731
        self.log_prior = dirichlet(prior_concentration, (topics,)).log()
        self.log_concepts = dirichlet(topic_concentration, (topics, concepts)).log()  # log p(c | z)
        image_centres = centre_scale * torch.randn(concepts, dim, generator=g, dtype=torch.float64)
        align = _orthogonal(dim, g)
        self.image = Side(image_centres, _orthogonal(dim, g), torch.randn(dim, generator=g, dtype=torch.float64))
        self.text = Side(image_centres @ align.T, _orthogonal(dim, g), torch.randn(dim, generator=g, dtype=torch.float64))
        self.noise, self.points, self.bend, self.dim = float(noise), int(points), float(bend), int(dim)
        self.n_topics = int(topics)

    # -- sampling --------------------------------------------------------------------------
    def sample_topics(self, n: int, g: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.log_prior.exp(), n, replacement=True, generator=g)

    def sample(self, topics: torch.Tensor, side: str, g: torch.Generator) -> Sample:
        s = getattr(self, side)
        probs = self.log_concepts.exp()[topics]  # [n, C]
        concepts = torch.multinomial(probs, self.points, replacement=True, generator=g)  # [n, m]
        raw = s.centres[concepts] + self.noise * torch.randn(*concepts.shape, self.dim, generator=g, dtype=torch.float64)
        bent = self._bend(raw, s)
        pts = torch.cat([bent, bent.mean(dim=1, keepdim=True)], dim=1)
        return Sample(pts.float(), raw, topics)

    def _bend(self, x: torch.Tensor, s: Side) -> torch.Tensor:
        # x + bend * tanh(Q x + b): the added term is bend-Lipschitz with bend < 1, so the map is invertible.
        return x + self.bend * torch.tanh(x @ s.bend_matrix.T + s.bend_offset)

    # -- exact inference ---------------------------------------------------------------------
    def log_likelihood(self, raw: torch.Tensor, side: str) -> torch.Tensor:
        """log p(x | z) ``[n, K]`` from the unbent draws (Jacobian terms do not depend on z)."""
        s = getattr(self, side)
        sq = torch.cdist(raw.reshape(-1, self.dim), s.centres).pow(2)  # [n*m, C]
        log_n = -sq / (2 * self.noise**2) - 0.5 * self.dim * (LOG_2PI + 2 * math.log(self.noise))
        per_point = torch.logsumexp(log_n.unsqueeze(1) + self.log_concepts.unsqueeze(0), dim=2)  # [n*m, K]
        return per_point.view(raw.shape[0], self.points, -1).sum(dim=1)

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

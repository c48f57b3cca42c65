"""The synthetic world's exact PMI against brute-force enumeration on a tiny world."""
import math

import torch

from suites.synthetic_world import World


def gaussian_density(x, mu, s):
    d = x.shape[-1]
    return torch.exp(-((x - mu) ** 2).sum(-1) / (2 * s**2)) / (2 * math.pi * s**2) ** (d / 2)


def brute_force_pmi(world: World, raw_x, raw_y):
    """p(x, y) / (p(x) p(y)) by summing over every topic and every concept of every point, no logs."""
    prior = world.log_prior.exp()
    pc = world.log_concepts.exp()

    def likelihood(raw, side):  # p(x | z) for each z
        centres = getattr(world, side).centres
        out = torch.ones(world.n_topics, dtype=torch.float64)
        for z in range(world.n_topics):
            for point in raw:
                out[z] *= sum(pc[z, c] * gaussian_density(point, centres[c], world.noise) for c in range(len(centres)))
        return out

    lx, ly = likelihood(raw_x, "image"), likelihood(raw_y, "text")
    joint = (prior * lx * ly).sum()
    return math.log(joint / ((prior * lx).sum() * (prior * ly).sum()))


def tiny_world(bend=0.3):
    return World(topics=3, concepts=4, dim=2, points=2, noise=0.8, centre_scale=1.0,
                 prior_concentration=2.0, topic_concentration=0.7, bend=bend, seed=5)


def test_exact_pmi_matches_brute_force():
    world = tiny_world()
    g = torch.Generator().manual_seed(0)
    z = world.sample_topics(6, g)
    img, txt = world.sample(z, "image", g), world.sample(z, "text", g)
    pmi = world.pmi(world.log_posterior(img.raw, "image"), world.log_posterior(txt.raw, "text"))
    for i in range(6):
        for j in range(6):
            assert math.isclose(float(pmi[i, j]), brute_force_pmi(world, img.raw[i], txt.raw[j]), rel_tol=1e-9, abs_tol=1e-9)


def test_posteriors_are_distributions_and_positives_have_higher_pmi():
    world = World(8, 16, 16, 4, 0.6, 1.0, 5.0, 0.5, 0.5, 0)
    g = torch.Generator().manual_seed(1)
    z = world.sample_topics(500, g)
    img, txt = world.sample(z, "image", g), world.sample(z, "text", g)
    post = world.log_posterior(img.raw, "image")
    assert torch.allclose(post.exp().sum(1), torch.ones(500, dtype=torch.float64))
    pmi = world.pmi(post, world.log_posterior(txt.raw, "text"))
    assert pmi.diag().mean() > pmi.mean() + 1.0
    # E_y[exp PMI(x, y)] = 1 for every x (PMI is a log density ratio): check on average.
    assert abs(float(pmi.exp().mean()) - 1.0) < 0.15


def test_pooled_point_is_the_mean_and_the_world_is_seeded():
    a, b = tiny_world(), tiny_world()
    assert torch.equal(a.log_concepts, b.log_concepts) and torch.equal(a.text.centres, b.text.centres)
    g = torch.Generator().manual_seed(2)
    s = a.sample(a.sample_topics(4, g), "image", g)
    assert s.points.shape == (4, 3, 2)
    assert torch.allclose(s.points[:, -1], s.points[:, :-1].mean(1), atol=1e-6)


def test_bend_changes_geometry_not_posteriors():
    flat, bent = tiny_world(0.0), tiny_world(0.9)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = flat.sample(flat.sample_topics(5, g1), "image", g1)
    s2 = bent.sample(bent.sample_topics(5, g2), "image", g2)
    assert torch.equal(s1.raw, s2.raw) and not torch.allclose(s1.points, s2.points)
    assert torch.equal(flat.log_posterior(s1.raw, "image"), bent.log_posterior(s2.raw, "image"))

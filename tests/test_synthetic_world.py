"""The synthetic world's exact PMI against brute-force enumeration on a tiny world."""

import math

import pytest
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
    return World(
        topics=3,
        concepts=4,
        dim=2,
        points=2,
        noise=0.8,
        centre_scale=1.0,
        prior_concentration=2.0,
        topic_concentration=0.7,
        bend=bend,
        seed=5,
    )


def test_exact_pmi_matches_brute_force():
    world = tiny_world()
    g = torch.Generator().manual_seed(0)
    z = world.sample_topics(6, g)
    img, txt = world.sample(z, "image", g), world.sample(z, "text", g)
    pmi = world.pmi(world.log_posterior(img.raw, "image"), world.log_posterior(txt.raw, "text"))
    for i in range(6):
        for j in range(6):
            assert math.isclose(
                float(pmi[i, j]), brute_force_pmi(world, img.raw[i], txt.raw[j]), rel_tol=1e-9, abs_tol=1e-9
            )


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


def mixture_density(world: World, point, side, weights):
    centres = getattr(world, side).centres
    return sum(weights[c] * gaussian_density(point, centres[c], world.noise) for c in range(len(centres)))


def brute_force_one_relevant_pmi(world: World, raw_x, raw_y):
    """The one_relevant generative story written out without logs: the relevant draw is at position i
    (probability 1/m), drawn from the topic's mixture; every other draw from the uniform concept mixture."""
    prior, pc = world.log_prior.exp(), world.log_concepts.exp()
    uniform = torch.full((pc.shape[1],), 1.0 / pc.shape[1], dtype=torch.float64)

    def likelihood(raw, side):
        out = torch.zeros(world.n_topics, dtype=torch.float64)
        m = len(raw)
        for z in range(world.n_topics):
            for i in range(m):
                term = mixture_density(world, raw[i], side, pc[z]) / m
                for j in range(m):
                    if j != i:
                        term = term * mixture_density(world, raw[j], side, uniform)
                out[z] += term
        return out

    lx, ly = likelihood(raw_x, "image"), likelihood(raw_y, "text")
    return math.log((prior * lx * ly).sum() / ((prior * lx).sum() * (prior * ly).sum()))


def tiny(mode, points=3):
    return World(
        topics=3,
        concepts=4,
        dim=2,
        points=points,
        noise=0.8,
        centre_scale=1.0,
        prior_concentration=2.0,
        topic_concentration=0.7,
        bend=0.3,
        seed=5,
        mode=mode,
    )


def test_one_relevant_pmi_matches_brute_force():
    world = tiny("one_relevant")
    g = torch.Generator().manual_seed(0)
    z = world.sample_topics(5, g)
    img, txt = world.sample(z, "image", g), world.sample(z, "text", g)
    pmi = world.pmi(world.log_posterior(img.raw, "image"), world.log_posterior(txt.raw, "text"))
    for i in range(5):
        for j in range(5):
            assert math.isclose(
                float(pmi[i, j]),
                brute_force_one_relevant_pmi(world, img.raw[i], txt.raw[j]),
                rel_tol=1e-9,
                abs_tol=1e-9,
            )
    # and it is not the draws world's PMI on the same draws (the mode changes the likelihood)
    draws = tiny("draws")
    assert not torch.allclose(
        pmi, draws.pmi(draws.log_posterior(img.raw, "image"), draws.log_posterior(txt.raw, "text"))
    )


def test_one_relevant_has_one_topic_draw_among_uniform_distractors():
    world = World(
        4, 6, 3, 5, 0.01, 10.0, 2.0, 0.05, 0.0, 1, mode="one_relevant"
    )  # near-noiseless: draws sit on centres
    g = torch.Generator().manual_seed(4)
    z = world.sample_topics(4000, g)
    s = world.sample(z, "image", g)
    nearest = torch.cdist(s.raw.reshape(-1, 3), world.image.centres).argmin(1).view(4000, 5)
    counts = torch.bincount(nearest.flatten(), minlength=6).double()
    concept_probs = world.log_concepts.exp()[z]  # [n, C]
    expected = 4 * 4000 / 6 + concept_probs.sum(0)  # four uniform distractors and one topic draw per input
    assert torch.allclose(counts, expected, rtol=0.06)
    # the relevant draw is at a random position: every position shows the topic's main concept equally often
    main = world.log_concepts.argmax(1)[z]
    share = (nearest == main.unsqueeze(1)).double().mean(0)
    assert float(share.max() - share.min()) < 0.05, share
    assert s.raw.shape == (4000, 5, 3) and s.points.shape == (4000, 6, 3)


def test_posterior_mode_shows_exact_log_posteriors_as_points():
    world = tiny("posterior")
    g = torch.Generator().manual_seed(1)
    z = world.sample_topics(7, g)
    s = world.sample(z, "image", g)
    assert s.points.shape == (7, 4, world.n_topics) and world.point_dim == world.n_topics
    post = world.log_posterior(s.raw, "image")
    centred = lambda lp: lp.clamp(min=-30) - lp.clamp(min=-30).mean(-1, keepdim=True)  # noqa: E731 (a one-line helper, used just below)
    assert torch.allclose(s.points[:, -1].double(), centred(post), atol=1e-5)  # pooled point: the exact posterior
    for i in range(3):  # each draw alone, with the prior
        one = world.point_log_likelihood(s.raw[:, i : i + 1], "image")[:, 0] + world.log_prior
        assert torch.allclose(s.points[:, i].double(), centred(one - torch.logsumexp(one, 1, keepdim=True)), atol=1e-5)
    # the posterior (and so the PMI) is the draws world's: only what a head is shown differs
    draws = tiny("draws")
    assert torch.equal(post, draws.log_posterior(s.raw, "image"))


def test_draws_mode_is_the_default_and_unchanged():
    a, b = tiny_world(), tiny("draws", points=2)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(
        a.sample(a.sample_topics(5, g1), "text", g1).points, b.sample(b.sample_topics(5, g2), "text", g2).points
    )


def test_bend_is_the_documented_map_with_seeded_offsets():
    a, b = tiny_world(0.4), tiny_world(0.4)
    g1, g2 = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    s, t = a.sample(a.sample_topics(9, g1), "text", g1), b.sample(b.sample_topics(9, g2), "text", g2)
    assert torch.equal(s.points, t.points)  # the bend's offsets and matrices are the world seed's
    side = a.text
    want = s.raw + 0.4 * torch.tanh(s.raw @ side.bend_matrix.T + side.bend_offset)
    assert torch.allclose(s.points[:, :-1].double(), want, atol=1e-6)
    assert not torch.equal(a.image.bend_offset, a.text.bend_offset)


def test_draws_are_with_replacement_and_their_noise_is_independent():
    # One concept per topic (concentration ~0): every draw of an input is that concept, so the
    # draws must be sampled with replacement; the noise around it is fresh for every draw.
    world = World(3, 5, 4, 6, 0.5, 3.0, 2.0, 1e-4, 0.0, 2)
    g = torch.Generator().manual_seed(0)
    z = world.sample_topics(400, g)
    s = world.sample(z, "image", g)
    main = world.log_concepts.argmax(1)[z]
    residual = s.raw - world.image.centres[main].unsqueeze(1)
    assert float(residual.abs().max()) < 5 * 0.5 * 3  # every draw sits on its topic's one concept
    assert abs(float(residual.std()) - 0.5) < 0.02
    assert float((residual[:, 0] - residual[:, 1]).abs().min()) > 0  # draws do not share their noise
    assert torch.equal(s.topics, z)


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"topics": 0}, "positive"),
        ({"concepts": 0}, "positive"),
        ({"dim": 0}, "positive"),
        ({"points": 0}, "positive"),
        ({"noise": 0.0}, "noise > 0"),
        ({"bend": 1.0}, r"bend must be in \[0, 1\)"),
        ({"bend": -0.1}, "bend"),
        ({"mode": "pooled"}, "mode must be one of draws, posterior, one_relevant"),
    ],
)
def test_world_refuses_impossible_settings(bad, says):
    ok = dict(
        topics=1,
        concepts=1,
        dim=1,
        points=1,
        noise=0.1,
        centre_scale=1.0,
        prior_concentration=1.0,
        topic_concentration=1.0,
        bend=0.99,
        seed=0,
    )
    World(**ok)  # the smallest world is allowed
    with pytest.raises(ValueError, match=says):
        World(**{**ok, **bad})


def test_centres_are_gaussian_at_their_scale_and_every_mode_is_seeded():
    world = World(4, 400, 8, 3, 0.5, 2.5, 2.0, 0.5, 0.3, 7)
    assert abs(float(world.image.centres.std()) - 2.5) < 0.1  # N(0, scale^2 I), not scale / N(0, 1)
    for mode in ("draws", "posterior", "one_relevant"):
        a, b = tiny(mode), tiny(mode)
        g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        s, t = a.sample(a.sample_topics(6, g1), "image", g1), b.sample(b.sample_topics(6, g2), "image", g2)
        assert torch.equal(s.points, t.points) and torch.equal(s.raw, t.raw), mode

"""Details of every shipped head that a plausible wrong version would pass, found by mutation testing
(scripts/mutation.sh): masks honoured on both sides, sides named in errors, option bounds, pinned
defaults, seeded draws, prototype heads' prompt averaging and scale."""

from __future__ import annotations

import math

import pytest
import torch

from heads import BUILTIN_MODULES, HEADS, get_head

# Every shipped head (the built-in modules' registrations): a new head is covered without editing this list.
ALL = sorted(n for n in HEADS.names() if get_head(n).__module__ in BUILTIN_MODULES)


def sets(n, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, m, d, generator=g), dim=-1)


def padded(x: torch.Tensor, extra: int):
    """x right-padded with huge garbage points, and the mask that marks them."""
    n, m, d = x.shape
    pts = torch.cat([x, torch.full((n, extra, d), 1e6)], 1)
    mask = torch.cat([torch.ones(n, m, dtype=torch.bool), torch.zeros(n, extra, dtype=torch.bool)], 1)
    return pts, mask


@pytest.mark.parametrize("name", ALL)
def test_padding_is_ignored_on_both_sides_and_reps_have_one_row_per_input(name):
    # Broken once per head: dropping the mask on one side read the garbage padding as points.
    torch.manual_seed(0)
    head = get_head(name)(6, 6) if name == "clip_frozen" else get_head(name)(6, 4)
    with torch.no_grad():  # off the initial symmetries (zero weight maps give uniform weights whatever the input)
        for p in head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tdim = 6 if name == "clip_frozen" else 4
    x, y = sets(5, 3, 6, 1), sets(7, 3, tdim, 2)
    with torch.no_grad():
        ri, rt = head.encode_image(x), head.encode_text(y)
        assert len(ri) == 5 and len(rt) == 7
        base = head.score(ri, rt)
        xp, xm = padded(x, 2)
        yp, ym = padded(y, 3)
        got = head.score(head.encode_image(xp, xm), head.encode_text(yp, ym))
    assert got.shape == (5, 7) and torch.allclose(got, base, atol=1e-4)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("side", ["image", "text"])
def test_a_wrong_dimension_is_refused_naming_its_side(name, side):
    head = get_head(name)(6, 6) if name == "clip_frozen" else get_head(name)(6, 4)
    with pytest.raises(ValueError, match=f"^{side} points must have shape"):
        getattr(head, f"encode_{side}")(torch.randn(2, 3, 5))


# Defaults are part of the protocol: a changed default changes every number (and needs a version bump).
DEFAULTS = {
    "clip_frozen": {"logit_scale": 100.0},
    "cosine": {"init_logit_scale": 1 / 0.07, "max_logit_scale": 100.0, "out_dim": None},
    "kme_rbf": {
        "sigma": math.sqrt(0.07),
        "max_inverse_sigma2": 100.0,
        "learn_sigma": True,
        "points_used": None,
        "memory_budget_mb": 256.0,
        "kernel": "auto",
        "out_dim": None,
    },
    "kme_rff": {
        "num_features": 1024,
        "features": "positive",
        "orthogonal": True,
        "seed": 0,
        "sigma": math.sqrt(0.07),
        "max_inverse_sigma2": 100.0,
        "learn_sigma": True,
        "points_used": None,
        "fourier_floor": 1e-4,
        "memory_budget_mb": 256.0,
        "out_dim": None,
        "output_scale": False,
    },
    "kme_proto": {
        "prototypes": 16,
        "sigma": math.sqrt(0.07),
        "max_inverse_sigma2": 100.0,
        "learn_sigma": True,
        "out_dim": None,
    },
    "proto_cosine": {"prototypes": 16, "init_logit_scale": 1 / 0.07, "max_logit_scale": 100.0, "out_dim": None},
    "wpse": {
        "alpha": 100.0,
        "sigma": 0.5,
        "num_features": 1024,
        "linear_weight": 2 / 3,
        "kernel_weight": 1 / 3,
        "init_logit_scale": 1 / 0.07,
        "min_logit_scale": 1.0,
        "max_logit_scale": 100.0,
        "out_dim": None,
        "seed": 0,
    },
    "filip": {
        "init_logit_scale": math.exp(3.8665),
        "max_logit_scale": 100.0,
        "out_dim": None,
        "memory_budget_mb": 512.0,
    },
    "meru": {
        "init_curvature": 1.0,
        "min_curvature": None,  # init_curvature / 10, as MERU
        "max_curvature": None,  # init_curvature * 10
        "learn_curvature": True,
        "init_logit_scale": 1 / 0.07,
        "max_logit_scale": 100.0,
        "out_dim": None,
    },
    "pcmepp": {"init_shift": 5.0, "init_negative_scale": 5.0, "init_log_variance": -5.0, "out_dim": None},
    "smooth_chamfer": {
        "temperature": 16.0,
        "num_points": None,
        "init_logit_scale": 1 / 0.07,
        "max_logit_scale": 100.0,
        "out_dim": None,
        "memory_budget_mb": 256.0,
    },
    "flair": {"init_logit_scale": 1 / 0.07, "max_logit_scale": 100.0, "out_dim": None, "memory_budget_mb": 512.0},
}


def test_meru_curvature_bounds_are_relative_to_its_start_as_merus():
    head = get_head("meru")(4, 4, init_curvature=2.0)
    assert [round(math.exp(b), 9) for b in head.log_range] == [0.2, 20.0]
    assert [round(math.exp(b), 9) for b in get_head("meru")(4, 4).log_range] == [0.1, 10.0]


@pytest.mark.parametrize("name", ALL)
def test_defaults_are_the_documented_ones(name):
    assert get_head(name)(4, 4).options == DEFAULTS[name]


@pytest.mark.parametrize("name", ["kme_rbf", "kme_rff", "kme_proto"])
def test_bandwidth_bounds_and_learnability(name):
    cls = get_head(name)
    head = cls(4, 4, sigma=0.1)  # 1/sigma^2 = 100: exactly the bound is allowed
    assert math.isclose(float(head.bandwidth.inverse_sigma2().detach()), 100.0, rel_tol=1e-5)
    assert head.bandwidth.log_inverse_sigma2.requires_grad  # learnable by default
    for bad in (0.0, 0.0999, -1.0):
        with pytest.raises(ValueError, match=r"sigma must be > 0 with 1/sigma\^2 <= 100"):
            cls(4, 4, sigma=bad)
    with pytest.raises(ValueError, match=r"1/sigma\^2 <= 4"):
        cls(4, 4, sigma=0.4, max_inverse_sigma2=4.0)  # 1/0.16 = 6.25 > 4
    assert cls(4, 4, sigma=0.5, max_inverse_sigma2=4.0).bandwidth.inverse_sigma2().detach().item() == pytest.approx(4.0)


def test_option_bounds_of_the_kernel_and_prototype_heads():
    rbf, rff = get_head("kme_rbf"), get_head("kme_rff")
    proto, control = get_head("kme_proto"), get_head("proto_cosine")
    assert rbf(4, 4, out_dim=1).out_dim == 1 and rff(4, 4, num_features=1).num_features == 1
    assert proto(4, 4, prototypes=1, out_dim=1).image_encoder.prototypes.shape == (1, 4)
    cases = [
        (rbf, {"memory_budget_mb": 0.0}, "memory_budget_mb must be positive"),
        (rbf, {"out_dim": 0}, "out_dim must be a positive integer"),
        (rff, {"num_features": 0}, "num_features must be"),
        (rff, {"fourier_floor": 0.0, "features": "fourier"}, "fourier_floor must be"),
        (proto, {"prototypes": 0}, "prototypes must be a positive integer"),
        (proto, {"out_dim": 0}, "out_dim must be a positive integer"),
        (control, {"init_logit_scale": 0.0}, "init_logit_scale"),
        (control, {"init_logit_scale": 101.0}, "init_logit_scale"),
    ]
    for cls, opts, says in cases:
        with pytest.raises(ValueError, match=says):
            cls(4, 4, **opts)
    control(4, 4, init_logit_scale=100.0)  # the bound itself is allowed
    control(4, 4, init_logit_scale=0.5)


@pytest.mark.parametrize("name", ["kme_proto", "proto_cosine"])
def test_prototype_heads_honour_out_dim(name):
    head = get_head(name)(8, 6, out_dim=3, prototypes=5)
    assert head.image_encoder.points().shape == (5, 3) and head.text_encoder.points().shape == (5, 3)


def test_prototypes_start_near_the_unit_sphere_and_their_points_are_unit_rows():
    torch.manual_seed(0)
    head = get_head("kme_proto")(64, 64, prototypes=200)
    norms = head.image_encoder.prototypes.norm(dim=1)
    assert 0.85 < float(norms.mean()) < 1.15  # N(0, I/d) rows: norm about 1 in any dimension
    head = get_head("kme_proto")(6, 3, prototypes=5)  # a map to 3 dims: rows, not columns, are normalised
    assert torch.allclose(head.image_encoder.points().norm(dim=1), torch.ones(5), atol=1e-6)


def test_prototype_prompt_averaging_is_the_exact_mean_embedding():
    # A KME is linear: exp(score(x, class)) is the mean over the class's prompts of exp(score(x, prompt)).
    torch.manual_seed(1)
    head = get_head("kme_proto")(6, 6, prototypes=4, sigma=0.7)
    x, prompts = sets(3, 2, 6, 3), sets(2 * 5, 2, 6, 4)
    with torch.no_grad():
        ri, rt = head.encode_image(x), head.encode_text(prompts)
        got = head.score(ri, head.combine_prompts(rt, 2, 5))
        want = torch.logsumexp(head.score(ri, rt).view(3, 2, 5), dim=2) - math.log(5)
    assert torch.allclose(got, want, atol=1e-5)


def test_proto_cosine_scores_scale_times_cosine():
    torch.manual_seed(2)
    head = get_head("proto_cosine")(6, 6, prototypes=4, init_logit_scale=7.0)
    with torch.no_grad():
        ri, rt = head.encode_image(sets(3, 2, 6, 5)), head.encode_text(sets(4, 2, 6, 6))
        want = 7.0 * ri.vectors @ rt.vectors.T
        assert torch.allclose(head.score(ri, rt), want, atol=1e-5)


def test_random_features_are_seeded_and_the_phase_covers_a_period():
    from heads.kme_rff import orthogonal_gaussian

    a = get_head("kme_rff")(6, 6, features="fourier", seed=3)
    b = get_head("kme_rff")(6, 6, features="fourier", seed=3)
    c = get_head("kme_rff")(6, 6, features="fourier", seed=4)
    assert torch.equal(a.omega, b.omega) and torch.equal(a.phase, b.phase)
    assert not torch.equal(a.omega, c.omega) and not torch.equal(a.phase, c.phase)
    phase = a.phase
    assert float(phase.min()) >= 0 and float(phase.max()) < 2 * math.pi and float(phase.max()) > 1.9 * math.pi
    assert abs(float(phase.mean()) - math.pi) < 0.2  # U[0, 2 pi): the Fourier estimate is unbiased
    g = torch.Generator().manual_seed(0)
    assert orthogonal_gaussian(10, 8, g).shape == (10, 8)  # a last partial block is cut to size


def test_kme_rff_diagnostics_report_their_names_and_use_each_sides_encoder():
    torch.manual_seed(3)
    head = get_head("kme_rff")(6, 4, sigma=1.0)
    d = head.diagnostics(sets(5, 2, 6, 7), sets(5, 2, 4, 8))
    assert set(d) == {"log_error_median", "log_error_p90", "inverse_sigma2"} and d["inverse_sigma2"] == pytest.approx(
        1.0
    )
    assert 0 <= d["log_error_median"] <= d["log_error_p90"]

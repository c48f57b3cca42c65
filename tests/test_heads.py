"""Heads against brute-force formulas and known identities."""

import math

import pytest
import torch

import heads
from heads import SimilarityHead, get_head, list_heads, register_head
from heads.pointsets import PointSetRep

torch.set_default_dtype(torch.float32)


def unit_sets(n, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, m, d, generator=g), dim=-1)


def brute_force_kme(img: PointSetRep, txt: PointSetRep, sigma: float) -> torch.Tensor:
    """log sum_ij a_i b_j exp(-|u_i - v_j|^2 / (2 sigma^2)), float64, by explicit loops over pairs."""
    U, A = img.points.double(), img.weights.double()
    V, B = txt.points.double(), txt.weights.double()
    out = torch.empty(len(U), len(V), dtype=torch.float64)
    for x in range(len(U)):
        for y in range(len(V)):
            sq = torch.cdist(U[x], V[y]).pow(2)
            out[x, y] = torch.log((A[x][:, None] * B[y][None, :] * torch.exp(-sq / (2 * sigma**2))).sum())
    return out


def random_mask(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, m, generator=g) > 0.4
    mask[:, -1] = True  # the pooled point is always real
    return mask


@pytest.mark.parametrize("masked", [False, True])
def test_kme_rbf_matches_brute_force(masked):
    torch.manual_seed(0)
    head = get_head("kme_rbf")(8, 8, sigma=0.4)
    with torch.no_grad():  # non-trivial maps and weights, so the test sees more than the identity
        head.image_encoder.map.weight.add_(0.3 * torch.randn(8, 8))
        head.image_encoder.point_score.weight.normal_()
        head.text_encoder.point_score.weight.normal_()
    x, y = torch.randn(6, 5, 8), torch.randn(9, 3, 8)  # sets of different sizes
    mx, my = (random_mask(6, 5, 1), random_mask(9, 3, 2)) if masked else (None, None)
    with torch.no_grad():
        ri, rt = head.encode_image(x, mx), head.encode_text(y, my)
        got = head.score(ri, rt).double()
    real = mx if masked else torch.ones(6, 5, dtype=torch.bool)
    assert torch.allclose(ri.points.norm(dim=-1)[real], torch.ones(int(real.sum())))
    assert torch.allclose(ri.weights.sum(1), torch.ones(6)) and torch.allclose(rt.weights.sum(1), torch.ones(9))
    if masked:
        assert (ri.weights[~mx] == 0).all() and (rt.weights[~my] == 0).all()
    want = brute_force_kme(ri, rt, float(head.sigma.detach()))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()


def test_proposition_2_single_point_is_scaled_cosine():
    """KME-CLIP's Proposition 2 (docs/heads.md): one point per side, unit weight:
    kme_rbf = (u.v - 1) / sigma^2 exactly."""
    head = get_head("kme_rbf")(16, 16, sigma=0.3)
    u, v = unit_sets(10, 1, 16, 3), unit_sets(12, 1, 16, 4)
    with torch.no_grad():
        got = head.score(head.encode_image(u), head.encode_text(v))
    want = (u[:, 0] @ v[:, 0].T - 1) / 0.3**2
    assert torch.allclose(got, want, atol=1e-4)


def test_points_used_keeps_only_the_last_points():
    head_all = get_head("kme_rbf")(8, 8)
    head_last = get_head("kme_rbf")(8, 8, points_used=1)
    x, y = torch.randn(4, 5, 8), torch.randn(6, 5, 8)
    with torch.no_grad():
        got = head_last.score(head_last.encode_image(x), head_last.encode_text(y))
        want = head_all.score(head_all.encode_image(x[:, -1:]), head_all.encode_text(y[:, -1:]))
    assert torch.allclose(got, want, atol=1e-5)


def test_points_used_counts_real_points_when_sets_are_padded():
    head = get_head("kme_rbf")(8, 8, points_used=2)
    x, y = torch.randn(3, 4, 8), torch.randn(5, 4, 8)
    # set 0: real points 0,1,2 (pad at 3); set 1: all real; set 2: real points 0,1 (pads at 2,3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        got = head.score(head.encode_image(x, mask), head.encode_text(y))
        rows = [
            head.score(head.encode_image(x[i : i + 1, idx]), head.encode_text(y))
            for i, idx in enumerate(([1, 2], [2, 3], [0, 1]))
        ]
    assert torch.allclose(got, torch.cat(rows), atol=1e-5)


def rff_error(num_features: int, seed: int = 0) -> float:
    sigma = 0.5
    rff = get_head("kme_rff")(16, 16, num_features=num_features, sigma=sigma, seed=seed)
    rbf = get_head("kme_rbf")(16, 16, sigma=sigma)
    x, y = unit_sets(40, 4, 16, 10), unit_sets(50, 4, 16, 11)
    with torch.no_grad():
        approx = rff.score(rff.encode_image(x), rff.encode_text(y))
        exact = rbf.score(rbf.encode_image(x), rbf.encode_text(y))
    return float((approx - exact).abs().mean())


# Measured (mean |log error| over 2,000 pairs of 4-point unit sets in d=16, seeds 0-2):
# D=256 0.525, 1024 0.351, 4096 0.232, 16384 0.144, 65536 0.090. Positive features have relative
# variance exp(|u+v|^2 / sigma^2) - 1 per pair, heavy-tailed at sigma=0.5, so the error falls
# like D^-1/3 here rather than D^-1/2. The bound keeps ~30% headroom over the D=4096 value.
RFF_BOUND_AT_4096 = 0.30


def test_kme_rff_converges_to_kme_rbf():
    small = sum(rff_error(256, s) for s in range(3)) / 3
    large = sum(rff_error(4096, s) for s in range(3)) / 3
    assert large < small
    assert large < RFF_BOUND_AT_4096, (small, large)


def test_kme_rff_feature_map_is_an_unbiased_kernel_estimate():
    # sigma = 1 keeps the estimator's relative variance (at most e^4 - 1 per pair) small enough
    # for a 5% check; smaller sigma is covered by the convergence test above.
    sigma, D = 1.0, 200_000
    head = get_head("kme_rff")(4, 4, num_features=D, sigma=sigma, orthogonal=False)
    u, v = unit_sets(1, 3, 4, 5)[0], unit_sets(1, 3, 4, 6)[0]
    with torch.no_grad():
        est = head.feature_map(u[None]).double()[0] @ head.feature_map(v[None]).double()[0].T
    want = torch.exp(u.double() @ v.double().T / sigma**2)
    assert torch.allclose(est, want, rtol=0.05)


def test_fourier_features_estimate_the_kernel_and_respect_the_floor():
    sigma = 0.5
    head = get_head("kme_rff")(16, 16, features="fourier", num_features=8192, sigma=sigma)
    rbf = get_head("kme_rbf")(16, 16, sigma=sigma)
    x, y = unit_sets(20, 2, 16, 7), unit_sets(30, 2, 16, 8)
    with torch.no_grad():
        approx = head.score(head.encode_image(x), head.encode_text(y))
        exact = rbf.score(rbf.encode_image(x), rbf.encode_text(y))
    assert torch.isfinite(approx).all()
    assert approx.min() >= math.log(1e-4) - 1e-6
    close = exact > math.log(0.05)  # where the kernel is well above the estimator's noise
    assert (approx - exact)[close].abs().mean() < 0.1


@pytest.mark.parametrize("name", ["kme_rbf", "kme_rff", "cosine"])
def test_chunked_equals_unchunked(name):
    torch.manual_seed(0)
    big = get_head(name)(8, 8)
    tiny_budget = {"memory_budget_mb": 0.01} if name != "cosine" else {}
    small = get_head(name)(8, 8, **tiny_budget)
    small.load_state_dict(big.state_dict())
    x, y = torch.randn(70, 5, 8), torch.randn(90, 5, 8)
    with torch.no_grad():
        a = big.score(big.encode_image(x), big.encode_text(y))
        b = small.score(small.encode_image(x), small.encode_text(y))
    assert torch.allclose(a, b, atol=1e-5)


def test_budget_really_forces_several_chunks(monkeypatch):
    from heads import pointsets

    calls = []
    original = pointsets.chunked_score

    def spy(pair_fn, *args, **kwargs):
        def counted(rs, cs):
            calls.append((rs, cs))
            return pair_fn(rs, cs)

        return original(counted, *args, **kwargs)

    import heads.kme_rbf_reference as mod

    monkeypatch.setattr(mod, "chunked_score", spy)
    head = get_head("kme_rbf")(8, 8, memory_budget_mb=0.01)
    with torch.no_grad():
        head.score(head.encode_image(torch.randn(70, 5, 8)), head.encode_text(torch.randn(90, 5, 8)))
    assert len(calls) > 4


@pytest.mark.parametrize("name", ["kme_rbf", "kme_rff"])
def test_point_order_and_padding_do_not_matter(name):
    head = get_head(name)(8, 8)
    x, y = torch.randn(5, 4, 8), torch.randn(6, 4, 8)
    with torch.no_grad():
        base = head.score(head.encode_image(x), head.encode_text(y))
        # permute the non-pooled points (the pooled point stays last, as the protocol defines)
        perm = torch.tensor([2, 0, 1, 3])
        shuffled = head.score(head.encode_image(x[:, perm]), head.encode_text(y[:, perm]))
        # right-pad with garbage points masked out
        pad = torch.full((5, 3, 8), 1e6)
        xp = torch.cat([x, pad], 1)
        mp = torch.cat([torch.ones(5, 4, dtype=torch.bool), torch.zeros(5, 3, dtype=torch.bool)], 1)
        padded = head.score(head.encode_image(xp, mp), head.encode_text(y))
    assert torch.allclose(base, shuffled, atol=1e-5)
    assert torch.allclose(base, padded, atol=1e-5)


@pytest.mark.parametrize("name", ["cosine", "kme_rbf", "kme_rff"])
@pytest.mark.parametrize("sigma", [0.1, 0.1 + 1e-7, 3.0])
def test_gradients_finite_at_bandwidth_bounds(name, sigma):
    opts = {} if name == "cosine" else {"sigma": sigma}
    if name == "cosine":
        opts = {"init_logit_scale": min(1 / sigma**2, 100.0)}
    head = get_head(name)(8, 8, **opts)
    x, y = unit_sets(16, 4, 8, 1), -unit_sets(16, 4, 8, 2)  # far-apart sets: deep in the kernel tail
    mask = random_mask(16, 4, 3)
    logits = head.score(head.encode_image(x, mask), head.encode_text(y))
    target = torch.arange(16)
    loss = torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)
    loss.backward()
    assert torch.isfinite(logits).all()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_sigma_is_clamped_and_starts_at_clip_temperature():
    head = get_head("kme_rbf")(8, 8)
    assert math.isclose(float(head.sigma.detach().pow(-2)), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        head.bandwidth.log_inverse_sigma2.fill_(10.0)
    assert float(head.sigma.detach().pow(-2)) <= 100.0 + 1e-3
    cos = get_head("cosine")(8, 8)
    with torch.no_grad():
        cos.log_logit_scale.fill_(10.0)
    assert float(cos.logit_scale.detach()) <= 100.0 + 1e-3


def test_rff_draws_are_seeded_buffers_saved_with_the_head():
    a = get_head("kme_rff")(8, 8, seed=3)
    b = get_head("kme_rff")(8, 8, seed=3)
    c = get_head("kme_rff")(8, 8, seed=4)
    assert torch.equal(a.omega, b.omega) and not torch.equal(a.omega, c.omega)
    assert "omega" in a.state_dict()
    c.load_state_dict(a.state_dict())
    assert torch.equal(a.omega, c.omega)


def test_orthogonal_draws_are_orthogonal_within_blocks():
    head = get_head("kme_rff")(8, 8, num_features=16)
    block = head.omega[:8].double()
    gram = block @ block.T
    assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros(8, 8, dtype=torch.float64), atol=1e-4)


def test_clip_frozen_is_the_backbone_cosine_times_100():
    head = get_head("clip_frozen")(8, 8)
    assert head.trainable is False and not list(head.parameters())
    x, y = torch.randn(4, 3, 8), torch.randn(5, 3, 8)
    got = head.score(head.encode_image(x), head.encode_text(y))
    want = 100 * torch.nn.functional.normalize(x[:, -1], dim=-1) @ torch.nn.functional.normalize(y[:, -1], dim=-1).T
    assert torch.allclose(got, want, atol=1e-4)
    with pytest.raises(ValueError, match="must match"):
        get_head("clip_frozen")(8, 4)


def test_cosine_uses_the_pooled_point_and_starts_as_clip():
    head = get_head("cosine")(8, 8)
    x, y = torch.randn(4, 3, 8), torch.randn(5, 3, 8)
    with torch.no_grad():
        got = head.score(head.encode_image(x), head.encode_text(y))
    want = torch.nn.functional.normalize(x[:, -1], dim=-1) @ torch.nn.functional.normalize(y[:, -1], dim=-1).T / 0.07
    assert torch.allclose(got, want, atol=1e-4)


def test_prompt_combination_of_kme_is_the_exact_mean_embedding():
    """Averaging KMEs then scoring equals log of the mean of the per-prompt kernel inner products."""
    head = get_head("kme_rbf")(8, 8, sigma=0.5)
    x, prompts = torch.randn(3, 4, 8), torch.randn(2 * 5, 4, 8)  # 2 classes x 5 prompts
    with torch.no_grad():
        ri, rt = head.encode_image(x), head.encode_text(prompts)
        got = head.score(ri, head.combine_prompts(rt, 2, 5))
        per_prompt = head.score(ri, rt).view(3, 2, 5)
    want = torch.logsumexp(per_prompt, dim=2) - math.log(5)
    assert torch.allclose(got, want, atol=1e-5)


def test_rff_prompt_combination_is_the_mean_of_feature_vectors():
    head = get_head("kme_rff")(8, 8, sigma=0.5)
    x, prompts = torch.randn(3, 4, 8), torch.randn(2 * 5, 4, 8)
    with torch.no_grad():
        ri, rt = head.encode_image(x), head.encode_text(prompts)
        got = head.score(ri, head.combine_prompts(rt, 2, 5))
        per_prompt = head.score(ri, rt).view(3, 2, 5)
    assert torch.allclose(got, torch.logsumexp(per_prompt, dim=2) - math.log(5), atol=1e-4)


# -- registry ------------------------------------------------------------------------------


def test_duplicate_name_is_rejected():
    with pytest.raises(ValueError, match="already registered"):

        @register_head("cosine")
        class Again(SimilarityHead):
            pass


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError, match="Did you mean.*kme_rbf"):
        get_head("kme_rfb")


def test_head_defined_in_a_test_file_registers_and_runs():
    @register_head("test_dot_product")
    class DotHead(SimilarityHead):
        version = 1
        description = "plain dot product of pooled points"

        def __init__(self, image_dim, text_dim, scale: float = 1.0):
            super().__init__(image_dim, text_dim)
            self.options = {"scale": scale}
            self.w = torch.nn.Parameter(torch.tensor(float(scale)))

        def encode_image(self, points, mask=None):
            return points[:, -1]

        def encode_text(self, points, mask=None):
            return points[:, -1]

        def score(self, a, b):
            return self.w * a @ b.T

    try:
        assert "test_dot_product" in list_heads()
        assert get_head("test_dot_product") is DotHead and DotHead.name == "test_dot_product"
        run_contract("test_dot_product")
    finally:
        heads.HEADS.unregister("test_dot_product")


def test_registering_a_non_head_fails():
    with pytest.raises(TypeError):
        register_head("not_a_head")(object)


def test_list_heads_is_sorted_and_has_the_shipped_heads():
    names = list_heads()
    assert names == sorted(names)
    assert {"cosine", "clip_frozen", "kme_rbf", "kme_rff"} <= set(names)


# -- the contract every registered head must meet ---------------------------------------------


def run_contract(name):
    cls = get_head(name)
    assert isinstance(cls.version, int) and cls.description and isinstance(cls.trainable, bool)

    def build_and_score():
        torch.manual_seed(123)
        head = cls(8, 8)
        g = torch.Generator().manual_seed(7)
        x, y = torch.randn(6, 4, 8, generator=g), torch.randn(9, 4, 8, generator=g)
        with torch.no_grad():
            return head.score(head.encode_image(x), head.encode_text(y))

    a, b = build_and_score(), build_and_score()
    assert a.shape == (6, 9)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list_heads())
def test_every_registered_head_meets_the_contract(name):
    run_contract(name)


def test_training_and_evaluation_paths_of_kme_rbf_agree():
    """score() takes an in-place path without autograd; both must give the same numbers."""
    head = get_head("kme_rbf")(8, 8, memory_budget_mb=0.01)
    x, y = torch.randn(20, 5, 8), torch.randn(30, 3, 8)
    with_grad = head.score(head.encode_image(x), head.encode_text(y))
    assert with_grad.requires_grad
    with torch.no_grad():
        without = head.score(head.encode_image(x), head.encode_text(y))
    assert torch.allclose(with_grad.detach(), without, atol=1e-5)


def test_training_and_evaluation_paths_of_kme_rff_agree():
    head = get_head("kme_rff")(8, 8)
    x, y = torch.randn(20, 5, 8), torch.randn(30, 3, 8)
    with_grad = head.score(head.encode_image(x), head.encode_text(y))
    with torch.no_grad():
        without = head.score(head.encode_image(x), head.encode_text(y))
    assert with_grad.requires_grad and torch.allclose(with_grad.detach(), without, atol=1e-5)


def test_position_bias_lets_a_kme_head_weigh_the_pooled_point_alone():
    """Weights start uniform; a large bias at position 0 (the pooled, last real point) makes kme_rbf the
    cosine form on that point: (u_last . v_last - 1) / sigma^2."""
    head = get_head("kme_rbf")(8, 8)
    x, y = unit_sets(5, 4, 8, 1), unit_sets(6, 4, 8, 2)
    with torch.no_grad():
        rep = head.encode_image(x)
        assert torch.allclose(rep.weights, torch.full((5, 4), 0.25))
        head.image_encoder.position_bias[0] = 60.0
        head.text_encoder.position_bias[0] = 60.0
        s = head.score(head.encode_image(x), head.encode_text(y))
    u, v = x[:, -1], y[:, -1]  # identity maps at the start: the points themselves
    want = (u @ v.T - 1) * head.inverse_sigma2
    assert torch.allclose(s, want, atol=1e-4)


@pytest.mark.parametrize("name", ["cosine", "kme_rbf", "kme_rff"])
def test_out_dim_sets_the_joint_space(name):
    head = get_head(name)(8, 6, out_dim=3)
    x, y = unit_sets(4, 2, 8, 3), unit_sets(5, 2, 6, 4)
    with torch.no_grad():
        s = head.score(head.encode_image(x), head.encode_text(y))
    assert s.shape == (4, 5) and torch.isfinite(s).all()
    weights = [p for n, p in head.named_parameters() if p.ndim == 2 and "point_score" not in n]
    assert weights and all(p.shape[0] == 3 for p in weights)
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        get_head(name)(8, 8, out_dim=0)


def test_kme_rff_diagnostics_measure_its_error_against_the_exact_kme():
    """Small at a wide bandwidth with many features, large at a narrow one: the variance of positive
    random features grows like exp(|u + v|^2 / sigma^2) / D."""
    x, y = unit_sets(20, 3, 8, 5), unit_sets(30, 3, 8, 6)
    with torch.no_grad():
        wide = get_head("kme_rff")(8, 8, sigma=1.0, num_features=8192).diagnostics(x, y)
        narrow = get_head("kme_rff")(8, 8, num_features=256).diagnostics(x, y)
    assert wide["inverse_sigma2"] == pytest.approx(1.0) and wide["log_error_median"] < 0.05
    assert narrow["log_error_median"] > 5 * wide["log_error_median"]
    assert get_head("kme_rbf")(8, 8).diagnostics(x, y) == {}


def test_kme_proto_is_the_exact_log_kme_of_its_prototypes():
    """Against a loop over the formula, and against kme_rbf's reference on the expanded point sets."""
    from heads.kme_rbf_reference import kme_log_inner

    torch.manual_seed(0)
    head = get_head("kme_proto")(6, 6, prototypes=5)
    with torch.no_grad():
        head.image_encoder.weight_map.weight.normal_()
        head.text_encoder.weight_map.weight.normal_()
        x, y = unit_sets(4, 3, 6, 1), unit_sets(7, 3, 6, 2)
        a, b = head.encode_image(x), head.encode_text(y)
        s = head.score(a, b)
        inv = float(head.bandwidth.inverse_sigma2())
        want = torch.empty(4, 7, dtype=torch.float64)
        for i in range(4):
            for j in range(7):
                total = sum(
                    math.exp(
                        a.log_weights[i, p] + b.log_weights[j, q] + (float(a.prototypes[p] @ b.prototypes[q]) - 1) * inv
                    )
                    for p in range(5)
                    for q in range(5)
                )
                want[i, j] = math.log(total)
        assert torch.allclose(s.double(), want, atol=1e-5)
        expanded = kme_log_inner(
            PointSetRep(a.prototypes.expand(4, -1, -1), a.log_weights),
            PointSetRep(b.prototypes.expand(7, -1, -1), b.log_weights),
            torch.tensor(inv),
        )
        assert torch.allclose(s, expanded, atol=1e-4)
        moved = x.clone()
        moved[:, :-1] += 1.0  # weights depend on the pooled (last) point only
        assert torch.equal(head.encode_image(moved).log_weights, a.log_weights)


def test_proto_cosine_is_the_cosine_of_the_weighted_prototype_mean():
    torch.manual_seed(0)
    control, kme = get_head("proto_cosine")(6, 6, prototypes=5), get_head("kme_proto")(6, 6, prototypes=5)
    kme.image_encoder.load_state_dict(control.image_encoder.state_dict())
    x = unit_sets(4, 3, 6, 1)
    with torch.no_grad():
        rep, shared = control.encode_image(x), kme.encode_image(x)
        want = torch.nn.functional.normalize(shared.log_weights.exp() @ shared.prototypes, dim=-1)
    assert torch.allclose(rep.vectors, want, atol=1e-6)


def test_prototype_representations_concatenate_by_weights_only():
    from bench.eval.scoring import encode

    head = get_head("kme_proto")(6, 6, prototypes=4)
    x = unit_sets(10, 3, 6, 4)
    whole = encode(head, "image", x, None, torch.device("cpu"))
    batched = encode(head, "image", x, None, torch.device("cpu"), batch=3)
    assert batched.prototypes.shape == (4, 6) and torch.allclose(batched.log_weights, whole.log_weights)


def test_kme_rff_output_scale_multiplies_the_score_and_leaves_diagnostics_alone():
    torch.manual_seed(0)
    plain = get_head("kme_rff")(8, 8, max_inverse_sigma2=2.0, sigma=1.0)
    scaled = get_head("kme_rff")(8, 8, max_inverse_sigma2=2.0, sigma=1.0, output_scale=True)
    scaled.load_state_dict(plain.state_dict(), strict=False)
    x, y = unit_sets(4, 3, 8, 1), unit_sets(5, 3, 8, 2)
    with torch.no_grad():
        scaled.log_output_scale.fill_(math.log(3.0))
        a = plain.score(plain.encode_image(x), plain.encode_text(y))
        b = scaled.score(scaled.encode_image(x), scaled.encode_text(y))
        assert torch.allclose(b, 3.0 * a, atol=1e-5)
        assert scaled.diagnostics(x, y) == plain.diagnostics(x, y)
        scaled.log_output_scale.fill_(10.0)
        assert torch.allclose(scaled.score(scaled.encode_image(x), scaled.encode_text(y)), 100.0 * a, rtol=1e-4)


def test_directional_scores_is_declared_by_overriding_score_directions():
    """The contract scoring and --list-heads read (it replaced a __qualname__ string comparison)."""
    assert heads.get_head("filip").directional_scores()
    assert not heads.get_head("cosine").directional_scores() and not heads.get_head("kme_rbf").directional_scores()

    class Renamed(heads.get_head("cosine")):  # a subclass that does not override inherits the answer
        pass

    assert not Renamed.directional_scores()

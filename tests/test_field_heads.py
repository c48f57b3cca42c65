"""WPSE, FILIP and MERU against float64 loops written from their definitions (docs/heads.md), with masks
and padded sets; FILIP's two directions; MERU's distance and symmetry; WPSE's random features redrawn
in training and fixed for evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from heads import get_head


def ragged(n, p, d, seed):
    """Sets of 1..p real points, right-padded with garbage, and their mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, d, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, p + 1, (n,), generator=g)
    mask = torch.arange(p)[None, :] < lengths[:, None]
    return x.masked_fill(~mask[..., None], 1e6), mask


def perturbed(head, seed=0):
    """A head in float64 with every parameter moved off its initial value (zero maps hide mistakes)."""
    torch.manual_seed(seed)
    head = head.double()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return head.eval()


def unit(v):
    return v / v.norm()


# -- FILIP ------------------------------------------------------------------------------------------
def filip_loop(head, x, xm, y, ym):
    """s_I(x, y) = mean over image tokens (class token, the last real one, dropped) of the max over real
    text tokens of u . v; s_T = mean over real text tokens of the max over the image's tokens."""
    s_i = torch.zeros(len(x), len(y), dtype=torch.float64)
    s_t = torch.zeros_like(s_i)
    for a in range(len(x)):
        real = [i for i in range(x.shape[1]) if xm[a, i]]
        toks = real[:-1] if len(real) > 1 else real
        u = [unit(head.image_map(x[a, i])) for i in toks]
        for b in range(len(y)):
            v = [unit(head.text_map(y[b, j])) for j in range(y.shape[1]) if ym[b, j]]
            s_i[a, b] = sum(max(float(ui @ vj) for vj in v) for ui in u) / len(u)
            s_t[a, b] = sum(max(float(vj @ ui) for ui in u) for vj in v) / len(v)
    scale = float(head.logit_scale)
    return scale * s_i, scale * s_t


@pytest.mark.parametrize("budget", [512.0, 1e-4])  # one block, and many tiny ones
def test_filip_both_directions_equal_the_loop(budget):
    head = perturbed(get_head("filip")(5, 4, out_dim=3, memory_budget_mb=budget))
    x, xm = ragged(4, 5, 5, 1)
    y, ym = ragged(6, 4, 4, 2)
    with torch.no_grad():
        s_i, s_t = head.score_directions(head.encode_image(x, xm), head.encode_text(y, ym))
        want_i, want_t = filip_loop(head, x, xm, y, ym)
    assert torch.allclose(s_i, want_i, atol=1e-9) and torch.allclose(s_t, want_t, atol=1e-9)
    assert not torch.allclose(s_i, s_t)  # the two directions really differ
    assert torch.equal(head.score(head.encode_image(x, xm), head.encode_text(y, ym)), s_i)


def test_filip_prompt_ensemble_averages_scores_over_prompts():
    head = perturbed(get_head("filip")(4, 4))
    x, xm = ragged(3, 4, 4, 3)
    y, ym = ragged(6, 3, 4, 4)  # 2 classes x 3 prompts
    with torch.no_grad():
        ri, rt = head.encode_image(x, xm), head.encode_text(y, ym)
        got = head.score(ri, head.combine_prompts(rt, 2, 3))
        want = head.score(ri, rt).view(3, 2, 3).mean(-1)
    assert torch.allclose(got, want, atol=1e-12)


def test_filip_reps_of_different_widths_concatenate():
    from bench.eval.scoring import encode

    head = perturbed(get_head("filip")(4, 4))
    y, ym = ragged(7, 6, 4, 5)
    ym[:4, 3:] = False  # the first batch is narrower once its padding is trimmed
    with torch.no_grad():
        whole = head.encode_text(y, ym)
        batched = encode(head, "text", y, ym, "cpu", batch=4)
        ri = head.encode_image(*ragged(2, 3, 4, 6))
        assert torch.allclose(head.score(ri, whole), head.score(ri, batched))


# -- MERU -------------------------------------------------------------------------------------------
def meru_loop(head, x_pooled, y_pooled):
    c = float(head.curvature)
    a_i, a_t = math.exp(min(float(head.log_alpha_image), 0)), math.exp(min(float(head.log_alpha_text), 0))

    def lift(v):
        r = float(v.norm())
        space = math.sinh(math.sqrt(c) * r) * v / (math.sqrt(c) * r)
        return space, math.sqrt(1 / c + float(space @ space))

    out = torch.zeros(len(x_pooled), len(y_pooled), dtype=torch.float64)
    for a in range(len(x_pooled)):
        xs, xt = lift(a_i * head.image_map(x_pooled[a]))
        for b in range(len(y_pooled)):
            ys, yt = lift(a_t * head.text_map(y_pooled[b]))
            inner = float(xs @ ys) - xt * yt
            out[a, b] = -float(head.logit_scale) * math.acosh(max(-c * inner, 1 + 1e-8)) / math.sqrt(c)
    return out


def test_meru_equals_the_lorentz_distance_formula_on_the_pooled_points():
    head = perturbed(get_head("meru")(5, 4, out_dim=3))
    x, xm = ragged(4, 3, 5, 7)
    y, ym = ragged(5, 3, 4, 8)
    last = lambda p, m: p[torch.arange(len(p)), m.sum(1) - 1]  # noqa: E731 (sets are left-aligned)
    with torch.no_grad():
        got = head.score(head.encode_image(x, xm), head.encode_text(y, ym))
        want = meru_loop(head, last(x, xm), last(y, ym))
    assert torch.allclose(got, want, atol=1e-9)
    assert float(head.curvature) != 1.0  # the curvature was moved, so c is really in the formula


def test_meru_distance_is_symmetric_zero_on_the_diagonal_and_c_is_clamped():
    head = get_head("meru")(4, 4, max_curvature=2.0).double().eval()
    x = torch.randn(5, 1, 4, dtype=torch.float64)
    with torch.no_grad():
        ri, rt = head.encode_image(x), head.encode_text(x)  # same alpha and identity maps at the start
        s = head.score(ri, rt)
        assert torch.allclose(s, s.T, atol=1e-9)
        assert s.diagonal().abs().max() < 1e-2  # acosh(1 + 1e-8) ~ 1.4e-4, times the scale
        head.log_curvature.fill_(5.0)
        assert float(head.curvature) == pytest.approx(2.0)


def test_meru_prompts_average_in_the_tangent_space():
    head = perturbed(get_head("meru")(4, 4))
    y = torch.randn(6, 2, 4, dtype=torch.float64)
    with torch.no_grad():
        rt = head.encode_text(y)
        combined = head.combine_prompts(rt, 2, 3)
    assert torch.allclose(combined.vectors, rt.vectors.view(2, 3, 4).mean(1))


# -- WPSE -------------------------------------------------------------------------------------------
def wpse_loop(head, x, xm, y, ym):
    w, b = head.fourier()
    w, b = w.double(), b.double()
    D = w.shape[0]

    def embed(points, mask, weight_map):
        real = [points[i] for i in range(len(points)) if mask[i]]
        lin = sum(head.alpha * math.tanh(float(weight_map(p)) / head.alpha) * unit(p) for p in real) / len(real)
        phi = sum(
            head.alpha * math.tanh(float(weight_map(p)) / head.alpha) * math.sqrt(2 / D) * torch.cos(w @ unit(p) + b)
            for p in real
        ) / len(real)
        return lin, phi

    out = torch.zeros(len(x), len(y), dtype=torch.float64)
    for a in range(len(x)):
        li, fi = embed(x[a], xm[a], head.image_weight)
        for c in range(len(y)):
            lt, ft = embed(y[c], ym[c], head.text_weight)
            out[a, c] = float(head.logit_scale) * (2 / 3 * float(li @ lt) + 1 / 3 * float(fi @ ft))
    return out


def test_wpse_equals_the_weighted_point_set_formula():
    head = perturbed(get_head("wpse")(4, 4, num_features=64, alpha=2.0))  # small alpha: tanh far from linear
    x, xm = ragged(3, 4, 4, 9)
    y, ym = ragged(4, 5, 4, 10)
    with torch.no_grad():
        got = head.score(head.encode_image(x, xm), head.encode_text(y, ym))
        want = wpse_loop(head, x, xm, y, ym)
    assert torch.allclose(got, want, atol=1e-9)


def test_wpse_features_are_redrawn_every_training_step_and_fixed_for_evaluation():
    head = get_head("wpse")(4, 4, num_features=32, seed=3)
    x = torch.randn(3, 2, 4)
    fixed = head.fourier()
    head.train()
    head.begin_train_step(0)
    first = head.fourier()
    s0 = head.score(head.encode_image(x), head.encode_text(x)).detach()
    head.begin_train_step(1)
    s1 = head.score(head.encode_image(x), head.encode_text(x)).detach()
    assert not torch.equal(first[0], head.fourier()[0]) and not torch.allclose(s0, s1)
    head.begin_train_step(0)
    assert torch.equal(first[0], head.fourier()[0])  # seeded by (seed, step): every rank draws the same
    head.eval()
    assert torch.equal(head.fourier()[0], fixed[0])
    again = get_head("wpse")(4, 4, num_features=32, seed=3)
    assert torch.equal(again.fourier()[0], fixed[0])  # the evaluation draw is the seed's
    assert not torch.equal(get_head("wpse")(4, 4, num_features=32, seed=4).fourier()[0], fixed[0])
    assert "eval_w" not in head.state_dict()  # made from the seed, not stored


def test_wpse_weights_can_be_negative_and_scale_is_clamped_below():
    head = get_head("wpse")(4, 4, alpha=1.0)
    with torch.no_grad():
        head.image_weight.bias.fill_(-50.0)
        rep = head.encode_image(torch.randn(2, 3, 4))
        head.log_logit_scale.fill_(-5.0)
    assert float(head.logit_scale) == pytest.approx(1.0)
    # weights alpha tanh(-50) = -1: the linear part is minus the mean of the unit points
    assert (rep.linear.norm(dim=1) > 0).all()


def test_wpse_prompt_means_are_exact():
    head = perturbed(get_head("wpse")(4, 4, num_features=16))
    y = torch.randn(6, 3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        ri, rt = head.encode_image(x), head.encode_text(y)
        got = head.score(ri, head.combine_prompts(rt, 2, 3))
        want = head.score(ri, rt).view(2, 2, 3).mean(-1)  # linear in the text embedding
    assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("name", ["wpse", "filip", "meru", "pcmepp", "smooth_chamfer", "flair"])
def test_new_heads_train_in_the_synthetic_suite_under_both_losses(name, tmp_path):
    from bench.run import config
    from bench.run.runner import run_suite

    for loss in ("infonce", "siglip"):
        cfg = config.resolve(
            {
                "train": {"steps": 20, "batch_size": 32, "loss": loss},
                "suites": {"synthetic": {"train_pairs": 256, "test_pairs": 40}},
            }
        )
        summary = run_suite(
            "synthetic", [name], cfg, tmp_path / loss, torch.device("cpu"), progress=False, log=lambda *a: None
        )
        record = next(r for r in summary.records if r.head.name == name)
        assert record.status == "ok", record.error
        assert record.head.options["out_dim"] == 4  # the suite's head_defaults reach the new heads
        assert record.metrics["infonce_excess"] is not None

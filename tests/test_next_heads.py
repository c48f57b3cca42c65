"""PCME++, Smooth-Chamfer and FLAIR-style pooling against float64 loops of the authors' formulas
(naver-ai/pcmepp's ClosedFormSampledDistanceLoss, DivE's smooth_chamfer_matching, FLAIR's
text-conditioned attention pooling), with masks, padded sets, chunked scoring and prompt groups."""

from __future__ import annotations

import math

import pytest
import torch
from test_field_heads import perturbed, ragged, unit

from heads import get_head


# -- PCME++ -------------------------------------------------------------------------------------------
def pcmepp_loop(head, x, xm, y, ym):
    """logit = -a (||mu_v - mu_t||^2 + sum_d (exp(logsig_v) + exp(logsig_t))) + b, mu unit, on pooled points."""
    out = torch.zeros(len(x), len(y), dtype=torch.float64)
    for i in range(len(x)):
        px = x[i, max(k for k in range(x.shape[1]) if xm[i, k])]
        mu_v, s_v = unit(head.image_map(px)), head.image_log_var(px).exp()
        for j in range(len(y)):
            py = y[j, max(k for k in range(y.shape[1]) if ym[j, k])]
            mu_t, s_t = unit(head.text_map(py)), head.text_log_var(py).exp()
            distance = float(((mu_v - mu_t) ** 2).sum()) + float((s_v.unsqueeze(0) + s_t.unsqueeze(0)).sum())
            out[i, j] = -float(head.negative_scale) * distance + float(head.shift)
    return out


def test_pcmepp_equals_the_closed_form_sampled_distance():
    head = perturbed(get_head("pcmepp")(6, 5, out_dim=4))
    x, xm = ragged(5, 3, 6, seed=1)
    y, ym = ragged(7, 4, 5, seed=2)
    with torch.no_grad():
        got = head.score(head.encode_image(x, xm), head.encode_text(y, ym))
        want = pcmepp_loop(head, x, xm, y, ym)
    assert torch.allclose(got, want, atol=1e-10, rtol=1e-10)


def test_pcmepp_variance_lowers_an_image_against_every_text_by_the_same_amount():
    """The variance term does not depend on the other side: more uncertainty, a uniformly lower logit."""
    head = perturbed(get_head("pcmepp")(4, 4))
    x, xm = ragged(3, 2, 4, seed=11)
    y, ym = ragged(5, 2, 4, seed=12)
    with torch.no_grad():
        img, txt = head.encode_image(x, xm), head.encode_text(y, ym)
        before = head.score(img, txt)
        img.variance_sum[0] += 0.25
        after = head.score(img, txt)
    want = torch.full((5,), 0.25 * float(head.negative_scale), dtype=torch.float64)
    assert torch.allclose(before[0] - after[0], want, atol=1e-12)
    assert torch.equal(before[1:], after[1:])


def test_pcmepp_own_loss_is_the_authors_bce_on_matched_pairs():
    from bench.run import losses

    logits = torch.randn(4, 4, dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    eye = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(losses.build("pcme_bce")(logits, logits), 2 * bce(logits, eye))
    other = torch.randn(4, 4, dtype=torch.float64)
    assert torch.allclose(losses.build("pcme_bce")(logits, other), bce(logits, eye) + bce(other, eye))


# -- Smooth-Chamfer -------------------------------------------------------------------------------
def chamfer_loop(head, x, xm, y, ym):
    """1/2 [mean_x (1/a) log sum_y exp(a x.y) + mean_y (1/a) log sum_x exp(a x.y)] on unit real points."""
    a = head.temperature
    out = torch.zeros(len(x), len(y), dtype=torch.float64)
    for i in range(len(x)):
        u = [unit(head.image_map(x[i, k])) for k in range(x.shape[1]) if xm[i, k]]
        for j in range(len(y)):
            v = [unit(head.text_map(y[j, k])) for k in range(y.shape[1]) if ym[j, k]]
            lse_x = [math.log(sum(math.exp(a * float(ui @ vj)) for vj in v)) / a for ui in u]
            lse_y = [math.log(sum(math.exp(a * float(ui @ vj)) for ui in u)) / a for vj in v]
            out[i, j] = (sum(lse_x) / len(u) + sum(lse_y) / len(v)) / 2
    return float(head.logit_scale) * out


@pytest.mark.parametrize("budget", [256.0, 1e-4])  # one block, and many tiny ones
def test_smooth_chamfer_equals_the_authors_formula(budget):
    head = perturbed(get_head("smooth_chamfer")(6, 5, out_dim=4, temperature=3.0, memory_budget_mb=budget))
    x, xm = ragged(5, 3, 6, seed=3)
    y, ym = ragged(6, 4, 5, seed=4)
    with torch.no_grad():
        got = head.score(head.encode_image(x, xm), head.encode_text(y, ym))
    assert torch.allclose(got, chamfer_loop(head, x, xm, y, ym), atol=1e-10, rtol=1e-10)


def test_smooth_chamfer_approaches_the_mean_of_maxima_at_low_temperature():
    """As a grows, LSE_a -> max: the score becomes the symmetric Chamfer of the max similarities."""
    head = perturbed(get_head("smooth_chamfer")(4, 4, temperature=1e4))
    x, xm = ragged(3, 3, 4, seed=5)
    y, ym = ragged(3, 3, 4, seed=6)
    with torch.no_grad():
        got = head.score(head.encode_image(x, xm), head.encode_text(y, ym)) / head.logit_scale
        ix, ty = head.encode_image(x, xm), head.encode_text(y, ym)
        for i in range(3):
            for j in range(3):
                s = ix.points[i][ix.mask[i]] @ ty.points[j][ty.mask[j]].T
                want = (s.max(1).values.mean() + s.max(0).values.mean()) / 2
                assert abs(float(got[i, j]) - float(want)) < 1e-3


# -- FLAIR-style pooling -----------------------------------------------------------------------------
def flair_loop(head, x, xm, y, ym):
    """cos(softmax(t W_q (V W_k)^T / sqrt(d)) V, t): V the image's unit real tokens, t the text's unit pooled point."""
    out = torch.zeros(len(x), len(y), dtype=torch.float64)
    for i in range(len(x)):
        vs = [unit(head.image_map(x[i, k])) for k in range(x.shape[1]) if xm[i, k]]
        for j in range(len(y)):
            t = unit(head.text_map(y[j, max(k for k in range(y.shape[1]) if ym[j, k])]))
            q = head.query_map(t)
            logits = [float(q @ head.key_map(v)) / math.sqrt(len(t)) for v in vs]
            top = max(logits)
            w = [math.exp(z - top) for z in logits]
            pooled = sum(wk / sum(w) * v for wk, v in zip(w, vs))
            out[i, j] = float(pooled @ t) / float(pooled.norm())
    return float(head.logit_scale) * out


@pytest.mark.parametrize("budget", [512.0, 1e-4])
def test_flair_equals_text_conditioned_attention_pooling(budget):
    head = perturbed(get_head("flair")(6, 5, out_dim=4, memory_budget_mb=budget))
    x, xm = ragged(5, 4, 6, seed=7)
    y, ym = ragged(6, 3, 5, seed=8)
    with torch.no_grad():
        got = head.score(head.encode_image(x, xm), head.encode_text(y, ym))
    assert torch.allclose(got, flair_loop(head, x, xm, y, ym), atol=1e-10, rtol=1e-10)


def test_flair_prompt_groups_average_scores_and_it_has_no_image_vector():
    head = perturbed(get_head("flair")(4, 4))
    x, xm = ragged(3, 3, 4, seed=9)
    y, ym = ragged(6, 2, 4, seed=10)
    with torch.no_grad():
        img, txt = head.encode_image(x, xm), head.encode_text(y, ym)
        each = head.score(img, txt)
        grouped = head.score(img, head.combine_prompts(txt, 3, 2))
    assert torch.allclose(grouped, each.view(3, 3, 2).mean(-1))
    assert not get_head("flair").has_image_embedding()

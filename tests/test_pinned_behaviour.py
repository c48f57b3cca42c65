"""Behaviour that a plausible wrong version would otherwise pass: each test here was checked by
breaking the code once (see the comment on each) and watching it fail."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pipeline import fixture_record

from bench.report import leaderboard, regression, results
from bench.run.train import cosine_schedule, param_groups
from heads import get_head

REPO = Path(__file__).resolve().parent.parent


def test_cosine_prompt_combination_renormalises_the_class_vector():
    """Without renormalisation, class 0 (spread prompts, short mean) loses to class 1; CLIP's recipe
    renormalises, and class 0 wins. Broken by dropping the normalize in VectorRep.mean_over_groups."""
    from heads.cosine import VectorRep

    head = get_head("cosine")(3, 3)
    c = math.cos(math.radians(60)), math.sin(math.radians(60))
    prompts = torch.tensor(
        [
            [c[0], c[1], 0.0],
            [c[0], -c[1], 0.0],  # class 0: mean (0.5, 0, 0)
            [0.8, 0.6, 0.0],
            [0.8, 0.6, 0.0],
        ]
    )  # class 1: mean (0.8, 0.6, 0)
    classes = head.combine_prompts(VectorRep(prompts), 2, 2)
    assert torch.allclose(classes.vectors.norm(dim=1), torch.ones(2))
    image = VectorRep(torch.tensor([[1.0, 0.0, 0.0]]))
    with torch.no_grad():
        assert int(head.score(image, classes).argmax()) == 0
    unnormalised = prompts.reshape(2, 2, 3).mean(1)
    assert int((image.vectors @ unnormalised.T).argmax()) == 1  # the fixture does separate the two


@pytest.mark.parametrize("main,up", [("acc", True), ("loss", False)])
def test_leaderboard_rows_are_ordered_by_the_main_metric_in_its_direction(tmp_path, main, up):
    """References first, then heads best first, failed last. Broken by sorting descending always."""
    recs = [
        fixture_record("mid", value=0.5),
        fixture_record("best_acc", value=0.9),
        fixture_record("worst_acc", value=0.1),
        fixture_record("ceiling", value=1.0, kind="reference"),
        fixture_record("broken", status="failed"),
    ]
    for r in recs:
        r["suite"]["main_metric"] = main
        results.write(tmp_path, r)
    leaderboard.build(tmp_path)
    rows = [line.split(",")[3] for line in (tmp_path / "leaderboard.csv").read_text().splitlines()[1:]]
    # loss = 1 - acc, lower is better: the same heads lead either way, so an order that ignores the
    # direction (largest loss first) puts worst_acc first and fails.
    assert rows == ["ceiling", "best_acc", "mid", "worst_acc", "broken"]


def test_learning_rate_schedule_exact_values():
    """Linear warm-up to the peak, then half a cosine to zero. Broken by an off-by-one in warm-up."""
    f = cosine_schedule(warmup=4, total=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    expected = [0.5 * (1 + math.cos(math.pi * (s - 4) / 8)) for s in range(4, 13)]
    assert [f(s) for s in range(4, 13)] == pytest.approx(expected, abs=1e-15)
    assert f(12) == pytest.approx(0.0, abs=1e-15) and f(100) == pytest.approx(0.0, abs=1e-15)
    assert cosine_schedule(0, 10)(0) == 1.0


_KME_NO_DECAY = {
    "bandwidth.log_inverse_sigma2",
    "image_encoder.point_score.bias",
    "text_encoder.point_score.bias",
    "image_encoder.position_bias",
    "text_encoder.position_bias",
}
NO_DECAY = {  # scales, bandwidths, biases: never decayed (decaying a log temperature would pull it to 1)
    "cosine": {"log_logit_scale"},
    "kme_rbf": _KME_NO_DECAY,
    "kme_rff": _KME_NO_DECAY,
    "wpse": {"log_logit_scale", "image_weight.bias", "text_weight.bias"},
    "filip": {"log_logit_scale"},
    "meru": {"log_logit_scale", "log_alpha_image", "log_alpha_text", "log_curvature"},
}


@pytest.mark.parametrize("name", sorted(NO_DECAY))
def test_weight_decay_applies_to_matrices_only(name):
    """Broken by putting every parameter in the decayed group."""
    head = get_head(name)(8, 8)
    decay, rest = param_groups(head, 0.1)
    names = {id(p): n for n, p in head.named_parameters()}
    assert {names[id(p)] for p in rest["params"]} == NO_DECAY[name] and rest["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert len(decay["params"]) + len(rest["params"]) == len(list(head.parameters()))


def test_feature_cache_entries_differ_by_layers(tmp_path):
    """A layers=2 entry must never serve layers=3. Broken by dropping layers from the backbone identity."""
    from test_bad_inputs import _real_cfg, make_real_data

    from bench.cli import main

    data, tiny = make_real_data(tmp_path)
    counts = []
    for layers in (2, 3):
        cfg = _real_cfg(tmp_path, {"layers": layers})
        assert (
            main(
                [
                    "--suite",
                    "retrieval",
                    "--backbone",
                    str(tiny),
                    "--data-root",
                    str(data),
                    "--config",
                    str(cfg),
                    "--heads",
                    "clip_frozen",
                    "--out",
                    str(tmp_path / f"o{layers}"),
                    "--no-progress",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        counts.append(len(list((tmp_path / "cache").glob("*/manifest.json"))))
        shapes = {json.loads(m.read_text())["shape"][1] for m in (tmp_path / "cache").glob("*/manifest.json")}
    assert counts == [6, 12] and shapes == {2, 3}


def test_committed_baseline_is_what_the_code_makes_from_the_published_results():
    """The baseline's scores are exactly the published cells' metrics (whose keys a test ties to this
    code), under the same protocol. Broken by editing a score in the baseline by hand."""
    published = results.load_all(REPO / "results")
    committed = regression.load(REPO / "results" / "baselines" / "synthetic.json")
    made, kept = regression.make([r for r in published if r.suite.name == "synthetic" and r.repeat == 0])
    assert kept == []
    for key in ("scores", "protocol_hash", "suite_version", "metric_directions", "protocol", "head_options"):
        assert made[key] == committed[key], key


# -- properties ----------------------------------------------------------------------------------


def _unit(n, p, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, p, d, generator=g), dim=-1)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.floats(0.1, 3.0), st.integers(0, 2**31 - 1))
def test_proposition_2_for_any_bandwidth_and_dimension(d, sigma, seed):
    """One point per side: kme_rbf = (u.v - 1) / sigma^2, the cosine head's form with t = 1/sigma^2."""
    head = get_head("kme_rbf")(d, d, sigma=sigma, max_inverse_sigma2=200.0)
    u, v = _unit(5, 1, d, seed), _unit(7, 1, d, seed + 1)
    with torch.no_grad():
        got = head.score(head.encode_image(u), head.encode_text(v))
    assert torch.allclose(got, (u[:, 0] @ v[:, 0].T - 1) / sigma**2, atol=1e-3 / sigma**2)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["kme_rbf", "kme_rff"]), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_point_sets_are_sets(name, p, seed):
    """Any order of the non-pooled points gives the same score (the pooled point stays last)."""
    head = get_head(name)(6, 6)
    x, y = _unit(4, p, 6, seed), _unit(5, p, 6, seed + 1)
    perm = torch.cat([torch.randperm(p - 1, generator=torch.Generator().manual_seed(seed)), torch.tensor([p - 1])])
    with torch.no_grad():
        a = head.score(head.encode_image(x), head.encode_text(y))
        b = head.score(head.encode_image(x[:, perm]), head.encode_text(y[:, perm]))
    assert torch.allclose(a, b, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(["kme_rbf", "kme_rff"]),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 6),
    st.floats(1e-4, 0.05),
    st.integers(0, 2**31 - 1),
)
def test_chunked_equals_unchunked_for_any_sizes(name, n, m, p, budget, seed):
    torch.manual_seed(seed)
    whole = get_head(name)(6, 6)
    chunked = get_head(name)(6, 6, memory_budget_mb=budget)
    chunked.load_state_dict(whole.state_dict())
    x, y = torch.randn(n, p, 6), torch.randn(m, p, 6)
    with torch.no_grad():
        a = whole.score(whole.encode_image(x), whole.encode_text(y))
        b = chunked.score(chunked.encode_image(x), chunked.encode_text(y))
    assert a.shape == (n, m) and torch.allclose(a, b, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.floats(1.0, 200.0), st.floats(1e-5, 2e-3))
def test_chunked_score_tiles_the_matrix_exactly_once_within_the_budget(n_rows, n_cols, bytes_per_pair, budget_mb):
    """Every (row, column) pair is computed in exactly one block, and no block exceeds the budget.
    Broken by blocks that overlap, or a budget in the
    wrong unit: such versions give the right matrix at the wrong memory or time."""
    from heads.pointsets import chunked_score

    seen = torch.zeros(n_rows, n_cols, dtype=torch.int64)
    budget_pairs = max(1, int(budget_mb * 2**20 // bytes_per_pair))
    target = torch.arange(n_rows * n_cols, dtype=torch.float32).reshape(n_rows, n_cols)

    def block(rs, cs):
        seen[rs, cs] += 1
        pairs = (rs.stop - rs.start) * (cs.stop - cs.start)
        assert pairs <= budget_pairs, (rs, cs, budget_pairs)
        return target[rs, cs]

    out = chunked_score(block, n_rows, n_cols, bytes_per_pair, budget_mb, device="cpu")
    assert torch.equal(out, target) and bool((seen == 1).all())


def test_kme_rbf_with_one_point_follows_cosines_training_trajectory():
    """The temperature is parametrised alike (log of the inverse temperature, same start, same cap), so with
    one point per side kme_rbf and cosine are the same model and train the same way (Proposition 2).
    Broken by storing log sigma again: 1/sigma^2 then moves twice as fast and the losses part."""
    from bench.run.train import train_head
    from suites.base import PointSets

    g = torch.Generator().manual_seed(0)
    shared = torch.randn(512, 8, generator=g)
    x = torch.nn.functional.normalize(shared[:, None] + 0.8 * torch.randn(512, 3, 8, generator=g), dim=-1)
    y = torch.nn.functional.normalize(shared[:, None] + 0.8 * torch.randn(512, 3, 8, generator=g), dim=-1)
    data = PointSets(x, y)
    cfg = {"batch_size": 64, "lr": 2e-2, "weight_decay": 0.1, "warmup_steps": 5, "grad_clip": 1.0}
    for steps in (1, 10, 60):
        losses = {}
        for name, opts in (("cosine", {}), ("kme_rbf", {"points_used": 1})):
            torch.manual_seed(0)
            head = get_head(name)(8, 8, **opts)
            losses[name] = train_head(
                head, data, {**cfg, "steps": steps}, 0, torch.device("cpu"), progress=False
            ).final_loss
        assert losses["kme_rbf"] == pytest.approx(losses["cosine"], abs=1e-5), (steps, losses)


# -- closing what mutation testing found open (scripts/mutation.sh) ------------------------------------
def test_last_real_index_when_padding_follows_the_first_point():
    # Broken once: filling padded positions with +1 instead of -1 picked a padded point for [T, F, F].
    from heads.pointsets import last_real_index, last_real_point

    mask = torch.tensor([[True, False, False], [True, True, False], [False, True, True], [True, False, True]])
    assert last_real_index(mask).tolist() == [0, 1, 2, 2]
    points = torch.arange(4 * 3 * 2, dtype=torch.float32).view(4, 3, 2)
    assert torch.equal(last_real_point(points, mask), points[torch.arange(4), torch.tensor([0, 1, 2, 2])])


def test_positions_count_from_the_pooled_point_and_long_sets_share_the_last_bias():
    # Broken once: without the clamp at MAX_POSITIONS - 1 a 70-point set indexed past the bias table.
    from heads.pointsets import MAX_POSITIONS, positions_from_end

    mask = torch.tensor([[True, True, True, False]])
    assert positions_from_end(mask)[0, :3].tolist() == [2, 1, 0]
    long = positions_from_end(torch.ones(1, MAX_POSITIONS + 6, dtype=torch.bool))[0]
    assert long.tolist() == [MAX_POSITIONS - 1] * 7 + list(range(MAX_POSITIONS - 2, -1, -1))


def test_chunk_sizes_take_the_whole_budget_and_chunks_keep_the_dtype():
    from heads.pointsets import chunk_sizes, chunked_score

    assert chunk_sizes(10, 10, 1.0, 100) == (10, 10)  # one byte per pair: 100 pairs fit exactly
    assert chunk_sizes(10, 10, 1.0, 99)[0] < 10
    full = torch.randn(7, 5, dtype=torch.float64)
    calls = []

    def pair_fn(rs, cs):
        calls.append((rs, cs))
        return full[rs, cs]

    out = chunked_score(pair_fn, 7, 5, 2**20 / 3, 1.0, torch.device("cpu"), dtype=torch.float64)  # 3 pairs per MB
    assert out.dtype == torch.float64 and torch.equal(out, full) and len(calls) > 1
    calls.clear()
    out = chunked_score(pair_fn, 7, 5, 2**20 / 35, 1.0, torch.device("cpu"), dtype=torch.float64)  # 35 pairs: fits
    assert torch.equal(out, full) and len(calls) == 1  # a budget in MB (2**20 bytes), not 2 * 20


def test_fixed_bandwidth_stays_fixed_and_is_saved():
    head = get_head("kme_rbf")(4, 4, sigma=0.5, learn_sigma=False)
    assert "bandwidth.log_inverse_sigma2" in head.state_dict()
    assert not any(n.startswith("bandwidth") for n, _ in head.named_parameters())
    assert math.isclose(float(head.inverse_sigma2), 4.0, rel_tol=1e-6)


@pytest.mark.parametrize(
    "name, side", [("cosine", "image"), ("cosine", "text"), ("kme_rbf", "image"), ("kme_rbf", "text")]
)
def test_a_wrong_point_dimension_names_its_side(name, side):
    head = get_head(name)(4, 6)
    dim = 6 if side == "image" else 4  # the other side's dimension
    with pytest.raises(ValueError, match=f"^{side} points must have shape"):
        getattr(head, f"encode_{side}")(torch.randn(2, 3, dim))


def test_cosine_reads_the_last_real_point_of_padded_sets():
    # Broken once: dropping the mask in encode_image read the padding as the pooled point.
    torch.manual_seed(0)
    head = get_head("cosine")(4, 4)
    points = torch.randn(3, 5, 4)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True] * 3 + [False] * 2])
    for side in ("image", "text"):
        enc = getattr(head, f"encode_{side}")
        got = enc(points, mask).vectors
        want = torch.stack([enc(points[i : i + 1, : int(mask[i].sum())]).vectors[0] for i in range(3)])
        assert torch.allclose(got, want, atol=1e-6)


def test_cosine_options_at_their_bounds():
    cosine = get_head("cosine")
    cosine(4, 4, init_logit_scale=100.0, max_logit_scale=100.0)  # the scale may start at its bound
    assert cosine(4, 4, out_dim=1).image_map.weight.shape == (1, 4)  # one output dimension is allowed
    for bad in ({"init_logit_scale": 0.0}, {"init_logit_scale": 101.0}):
        with pytest.raises(ValueError, match="0 < init_logit_scale <= max_logit_scale"):
            cosine(4, 4, **bad)
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        cosine(4, 4, out_dim=0)
    from heads.pointsets import PointSetEncoder, PointSetRep

    with pytest.raises(ValueError, match="points_used must be a positive integer"):
        PointSetEncoder(4, 4, points_used=0)
    rep = PointSetRep(torch.zeros(5, 2, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="expected 2 x 3 sets, got 5"):
        rep.mean_over_groups(2, 3)


class _Points:
    """Just what kme_rbf's dispatch reads from a representation's points: device, shape, requires_grad."""

    def __init__(self, device="cuda", p=4, requires_grad=False):
        self.device, self.shape, self.requires_grad = torch.device(device), (3, p, 8), requires_grad


def _dispatch(monkeypatch, kernel="auto", available=True, fits=True, device="cuda", grad=False, failed=False):
    from heads import kme_rbf_fused
    from heads.pointsets import PointSetRep

    monkeypatch.setattr(kme_rbf_fused, "available", lambda d: available)
    monkeypatch.setattr(kme_rbf_fused, "supports", lambda m, n: fits and (m, n) == (4, 5))
    head = get_head("kme_rbf")(8, 8, kernel=kernel, learn_sigma=False)
    head.fused_failed = failed
    image, text = PointSetRep(_Points(device, 4, grad), None), PointSetRep(_Points(device, 5), None)
    return head.uses_fused_kernel(image, text)


def test_kme_rbf_takes_the_fused_kernel_exactly_where_it_should(monkeypatch):
    # Every condition of the dispatch, each flipped alone (a GPU is not needed to decide).
    assert _dispatch(monkeypatch) is True
    for flip in (
        {"available": False},
        {"fits": False},
        {"device": "cpu"},
        {"grad": True},
        {"failed": True},
        {"kernel": "torch"},
    ):
        assert _dispatch(monkeypatch, **flip) is False, flip
    assert _dispatch(monkeypatch, kernel="triton") is True
    for flip, why in (
        ({"grad": True}, "no backward pass"),
        ({"fits": False}, "sets are limited to"),
        ({"available": False}, "needs a CUDA device"),
    ):
        with pytest.raises(ValueError, match=why):
            _dispatch(monkeypatch, kernel="triton", **flip)
    with torch.no_grad():  # no grad mode: points that require grad do not force the PyTorch path
        assert _dispatch(monkeypatch, grad=True) is True


def test_kme_rbf_falls_back_loudly_in_auto_and_never_in_triton(monkeypatch, caplog):
    from heads import kme_rbf_fused
    from heads.kme_rbf_reference import kme_log_inner

    torch.manual_seed(0)
    head = get_head("kme_rbf")(4, 4)
    with torch.no_grad():
        img, txt = head.encode_image(torch.randn(3, 2, 4)), head.encode_text(torch.randn(5, 2, 4))
        exact = kme_log_inner(img, txt, head.inverse_sigma2, 256.0)
        monkeypatch.setattr(head, "uses_fused_kernel", lambda a, b: True)
        monkeypatch.setattr(kme_rbf_fused, "log_inner", lambda a, b, s: exact + 1.0)
        assert torch.equal(head.score(img, txt), exact + 1.0) and head.last_kernel == "triton"

        def broken(a, b, s):
            raise RuntimeError("launch failed")

        monkeypatch.setattr(kme_rbf_fused, "log_inner", broken)
        with caplog.at_level("WARNING"):
            assert torch.equal(head.score(img, txt), exact) and head.last_kernel == "torch"
        assert head.fused_failed is True and "RuntimeError: launch failed" in caplog.text
        assert "kernel: torch to silence this" in caplog.text

        def oom(a, b, s):
            raise RuntimeError("CUDA out of memory")

        monkeypatch.setattr(kme_rbf_fused, "log_inner", oom)
        with pytest.raises(RuntimeError, match="out of memory"):  # a smaller budget is the fix, not a silent fallback
            head.score(img, txt)
        head.kernel = "triton"
        monkeypatch.setattr(kme_rbf_fused, "log_inner", broken)
        with pytest.raises(RuntimeError, match="launch failed"):
            head.score(img, txt)


def test_kernel_triton_is_refused_before_work_where_it_cannot_run(monkeypatch):
    from heads import kme_rbf_fused

    seen = []
    monkeypatch.setattr(kme_rbf_fused, "available", lambda d: seen.append(d) or False)
    with pytest.raises(ValueError, match="kernel: triton needs a CUDA device.*this run is on cpu"):
        get_head("kme_rbf")(4, 4, kernel="triton").check_device(torch.device("cpu"))
    assert seen == [torch.device("cpu")]
    get_head("kme_rbf")(4, 4, kernel="auto").check_device(torch.device("cpu"))  # auto and torch always run
    get_head("kme_rbf")(4, 4, kernel="torch").check_device(torch.device("cpu"))
    monkeypatch.setattr(kme_rbf_fused, "available", lambda d: True)
    get_head("kme_rbf")(4, 4, kernel="triton").check_device(torch.device("cuda"))


@pytest.mark.parametrize(
    "name", ["clip_frozen", "cosine", "kme_rbf", "kme_rff", "kme_proto", "proto_cosine", "wpse", "filip", "meru"]
)
def test_a_heads_options_are_its_resolved_constructor_options(name):
    from bench.run import config

    cls = get_head(name)
    assert cls(4, 4).options == config.head_options(cls, {}, name)
    given = {"out_dim": 3} if "out_dim" in config.head_options(cls, {}, name) else {"logit_scale": 50.0}
    assert cls(4, 4, **given).options == config.head_options(cls, given, name)
    assert repr(given)[1:-1].split(":")[0].strip("'") in repr(cls(4, 4, **given))

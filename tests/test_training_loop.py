"""train_head against a training loop written out here from the protocol (docs/protocol.md, section 2):
the same parameters after every step, bit for bit, with padded sets, shared images, warm-up, cosine
decay, weight decay on matrices only and gradient clipping; and its refusals."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bench.run.train import TrainingDiverged, batch_order, train_head
from heads import get_head
from suites.base import PointSets

CFG = {"steps": 7, "batch_size": 4, "lr": 0.05, "weight_decay": 0.3, "warmup_steps": 2, "grad_clip": 0.5}


def reference_order(n, batch, steps, seed):
    g = torch.Generator().manual_seed(seed)
    rows, per_epoch = [], n // batch
    while len(rows) < steps:
        perm = torch.randperm(n, generator=g)
        rows += [perm[i * batch : (i + 1) * batch] for i in range(per_epoch)]
    return rows[:steps]


def reference_train(head, data: PointSets, cfg, seed):
    decay = [p for p in head.parameters() if p.ndim >= 2]
    rest = [p for p in head.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": rest, "weight_decay": 0.0}], lr=cfg["lr"]
    )
    losses = []
    for step, idx in enumerate(reference_order(len(data), cfg["batch_size"], cfg["steps"], seed)):
        w, total = cfg["warmup_steps"], cfg["steps"]
        factor = (step + 1) / w if step < w else 0.5 * (1 + math.cos(math.pi * (step - w) / (total - w)))
        for group in opt.param_groups:
            group["lr"] = cfg["lr"] * factor
        rows = data.image_of_pair[idx]
        s = head.score(
            head.encode_image(data.images[rows], data.image_mask[rows]),
            head.encode_text(data.texts[idx], data.text_mask[idx]),
        )
        target = torch.arange(len(idx))
        loss = (torch.nn.functional.cross_entropy(s, target) + torch.nn.functional.cross_entropy(s.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(head.parameters()), cfg["grad_clip"])
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 4, 5, generator=g)
    image_mask = torch.ones(6, 4, dtype=torch.bool)
    image_mask[::2, 3] = False  # some image sets padded
    texts = torch.randn(12, 3, 5, generator=g)
    text_mask = torch.ones(12, 3, dtype=torch.bool)
    text_mask[1::3, 2] = False
    return PointSets(images, texts, image_mask, text_mask, image_of_pair=torch.arange(12) % 6)


@pytest.mark.parametrize("name", ["cosine", "kme_rbf"])
def test_train_head_is_the_protocols_loop(name):
    torch.manual_seed(0)
    head = get_head(name)(5, 5)
    twin = copy.deepcopy(head)
    stats = train_head(head, data(), CFG, seed=11, device=torch.device("cpu"), progress=False)
    losses = reference_train(twin, data(), CFG, seed=11)
    for (n, p), (_, q) in zip(head.named_parameters(), twin.named_parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6), n
    assert stats.steps == 7 and stats.final_loss == pytest.approx(losses[-1], abs=1e-6)
    assert stats.seconds > 0 and stats.pairs_per_second == pytest.approx(7 * 4 / stats.seconds)
    assert not head.training  # left in evaluation mode


def test_batch_order_is_seeded_epochs_of_permutations():
    got = batch_order(10, 3, 8, seed=5)
    want = torch.stack(reference_order(10, 3, 8, 5))
    assert torch.equal(got, want) and got.shape == (8, 3)
    assert batch_order(10, 3, 0, seed=5).shape == (0, 3)
    assert batch_order(3, 3, 2, seed=5).shape == (2, 3)  # exactly one batch per epoch is allowed
    with pytest.raises(ValueError, match="fewer than batch_size=4"):
        batch_order(3, 4, 2, seed=5)


def test_heads_that_train_nothing_are_left_as_they_are():
    for head, cfg in ((get_head("clip_frozen")(5, 5), CFG), (get_head("cosine")(5, 5), {**CFG, "steps": 0})):
        before = copy.deepcopy(head.state_dict())
        stats = train_head(head, data(), cfg, seed=1, device=torch.device("cpu"), progress=False)
        assert stats.steps == 0 and stats.final_loss is None
        assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    stats = train_head(
        get_head("cosine")(5, 5), data(), {**CFG, "steps": 1}, seed=1, device=torch.device("cpu"), progress=False
    )
    assert stats.steps == 1 and stats.final_loss is not None  # one step is a step


def test_divergence_names_the_head_and_step():
    head = get_head("cosine")(5, 5)

    def exploding(image_rep, text_rep):
        return image_rep.vectors @ text_rep.vectors.T * float("inf")

    head.score = exploding
    with pytest.raises(
        TrainingDiverged, match=r"head 'mine': training loss is nan at step 0\. Lower train\.lr \(now 0\.05\)"
    ):
        train_head(head, data(), CFG, seed=1, device=torch.device("cpu"), label="mine", progress=False)


def test_grad_clip_zero_disables_clipping():
    torch.manual_seed(0)
    head = get_head("cosine")(5, 5)
    twin = copy.deepcopy(head)
    cfg = {**CFG, "grad_clip": 0.0}
    train_head(head, data(), cfg, seed=2, device=torch.device("cpu"), progress=False)
    reference_train(twin, data(), {**cfg, "grad_clip": float("inf")}, seed=2)  # no clipping at all
    for p, q in zip(head.parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)

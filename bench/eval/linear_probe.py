"""CLIP_benchmark 1.6.2's linear probe (``clip_benchmark/metrics/linear_probe.py``) on given features.

Reproduced step for step where it applies, so that on the same features and seed it gives the same
model (tested against CLIP_benchmark's own ``evaluate``): a ``Linear`` layer made after
``torch.manual_seed(seed)``; AdamW (every parameter decayed); cross-entropy; CLIP_benchmark's cosine
schedule without warm-up, set before every step; batches from a shuffled ``DataLoader`` that draws
its order from the global generator reseeded before each fit; the weight-decay sweep over
``logspace(-6, 2, 97)``: the 7 points of ``logspace(-6, 2, 7)``, then around the peak at +-8, 4, 2 and
1 grid steps, a fit at each, keeping the first strictly better validation top-1 (from 0 and index
0, as CLIP_benchmark); the final fit on train + validation with the chosen decay (train only with
``fewshot_k``), then the test set.

Where it differs, by choice: it runs on any device in float32 (CLIP_benchmark needs CUDA and
defaults to float16 autocast); the few-shot permutation is drawn after ``torch.manual_seed(seed)``
(CLIP_benchmark draws it from whatever state the caller left); a class without ``fewshot_k``
samples is an error, not a printed message and a None result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.core.errors import UserError

WEIGHT_DECAYS = np.logspace(-6, 2, num=97).tolist()
COARSE = [i for i, wd in enumerate(WEIGHT_DECAYS) if wd in np.logspace(-6, 2, num=7).tolist()]  # 0, 16, ..., 96
SPANS = (8, 4, 2, 1)


class ProbeError(UserError):
    """The probe cannot be fitted as asked (too few samples of a class for fewshot_k)."""


@dataclass
class ProbeResult:
    logits: torch.Tensor  # [test, classes]
    weight_decay: float
    fits: int
    sweep: list[tuple[float, float]]  # (weight decay, validation top-1) in the order fitted
    seconds: float


class _Rows(torch.utils.data.Dataset):
    """Features and labels fetched a whole batch at a time (one gather, not 512 item calls and a stack)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows):
        rows = torch.as_tensor(rows)
        return self.x[rows], self.y[rows]


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool):
    """The batches ``DataLoader(..., batch_size, shuffle)`` would give, drawing from the global generator in
    the same order (the iterator's base seed, then the sampler's), so the same seed gives the same order as
    CLIP_benchmark's loader (tested)."""
    data = _Rows(x, y)
    sampler = torch.utils.data.RandomSampler(data) if shuffle else torch.utils.data.SequentialSampler(data)
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    return torch.utils.data.DataLoader(data, batch_size=None, sampler=batches)


def fit(
    loader, dim: int, n_classes: int, weight_decay: float, lr: float, epochs: int, seed: int, device
) -> torch.nn.Module:
    """One linear layer, exactly CLIP_benchmark's ``train`` (without DataParallel and CUDA)."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(dim, n_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    steps = epochs * len(loader)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            step = i + epoch * len(loader)
            for group in optimizer.param_groups:  # CLIP_benchmark's cosine_lr, warm-up 0
                group["lr"] = 0.5 * (1 + np.cos(np.pi * step / steps)) * lr
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    return model


@torch.no_grad()
def infer(model, x: torch.Tensor, device, batch_size: int = 8192) -> torch.Tensor:
    return (
        torch.cat([model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
        if len(x)
        else torch.empty(0)
    )


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    """CLIP_benchmark's ``accuracy`` at k = 1 (topk, so ties fall as its kernel orders them)."""
    pred = logits.topk(1, 1, True, True)[1].t()
    return float(pred.eq(y.view(1, -1).expand_as(pred))[:1].reshape(-1).float().sum()) / len(y)


def fewshot_indices(y: torch.Tensor, k: int, seed: int) -> list[int]:
    """CLIP_benchmark's selection: a random permutation, keeping the first k of each class (all if k < 0)."""
    torch.manual_seed(seed)
    perm = [p.item() for p in torch.randperm(len(y))]
    idxs, counts = [], {}
    for p in perm:
        target = int(y[p])
        counts.setdefault(target, 0)
        if k < 0 or counts[target] < k:
            counts[target] += 1
            idxs.append(p)
    short = {c: n for c, n in counts.items() if k > 0 and n != k}
    if short:
        c, n = next(iter(short.items()))
        raise ProbeError(
            f"fewshot_k={k}, but {len(short)} class(es) have fewer training samples (class {c}: {n}); "
            "lower fewshot_k or use more training data."
        )
    return idxs


def evaluate(
    train_x,
    train_y,
    test_x,
    val_x=None,
    val_y=None,
    *,
    fewshot_k: int = -1,
    batch_size: int = 512,
    lr: float = 0.1,
    epochs: int = 20,
    seed: int = 0,
    device="cpu",
    progress=None,
    n_classes: int | None = None,
) -> ProbeResult:
    """The whole protocol; ``val_x`` None means no sweep (weight decay 0), as CLIP_benchmark. ``n_classes``:
    over every split (CLIP_benchmark takes the training labels' max + 1, which fails when the highest class
    has no training image, e.g. after the validation carve)."""
    start = time.perf_counter()
    dim = train_x.shape[1]
    n_classes = n_classes or int(train_y.max()) + 1
    idxs = fewshot_indices(train_y, fewshot_k, seed)
    tx, ty = train_x[idxs], train_y[idxs]
    train_loader = _loader(tx, ty, batch_size, True)
    sweep, fits = [], 0

    def peak(indices: list[int]) -> int:
        nonlocal fits
        best, best_acc = 0, 0.0
        for idx in indices:
            model = fit(train_loader, dim, n_classes, WEIGHT_DECAYS[idx], lr, epochs, seed, device)
            fits += 1
            acc = top1(infer(model, val_x, device), val_y)
            sweep.append((WEIGHT_DECAYS[idx], acc))
            if progress:
                progress(WEIGHT_DECAYS[idx], acc)
            if best_acc < acc:
                best, best_acc = idx, acc
        return best

    if val_x is not None:
        idx = peak(COARSE)
        for span in SPANS:
            idx = peak([max(idx - span, 0), idx, min(idx + span, len(WEIGHT_DECAYS) - 1)])
        weight_decay = WEIGHT_DECAYS[idx]
        final_loader = (
            _loader(torch.cat([tx, val_x]), torch.cat([ty, val_y]), batch_size, True) if fewshot_k < 0 else train_loader
        )
    else:
        weight_decay, final_loader = 0.0, train_loader
    model = fit(final_loader, dim, n_classes, weight_decay, lr, epochs, seed, device)
    fits += 1
    return ProbeResult(infer(model, test_x, device), weight_decay, fits, sweep, time.perf_counter() - start)


def validation_split(n: int, proportion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, validation rows): ``torch.utils.data.random_split`` with a generator seeded by ``seed``
    (CLIP_benchmark's CLI calls random_split with the global generator)."""
    parts = torch.utils.data.random_split(
        range(n), [1 - proportion, proportion], generator=torch.Generator().manual_seed(seed)
    )
    return torch.tensor(list(parts[0].indices)), torch.tensor(list(parts[1].indices))

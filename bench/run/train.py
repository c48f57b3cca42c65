"""Contrastive training of a head on cached point sets, under one budget and one loss for every head.

Fairness is the point: the optimiser, schedule, steps, batch size and the exact order of
training pairs depend only on the config and the seed, never on the head.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from bench.core import distributed
from bench.core.errors import ConfigError
from bench.eval.scoring import check_rep
from bench.run import losses
from suites.base import PointSets


class TrainingDiverged(RuntimeError):
    """Loss or gradients became NaN/inf; the message names the head and the step."""


@dataclass
class TrainStats:
    steps: int
    final_loss: float | None
    seconds: float
    pairs_per_second: float | None
    loss: torch.nn.Module | None = None  # the loss module, with its trained parameters (SigLIP's t and b)
    curve: list[dict] = field(default_factory=list)  # [{step, train_loss, val}] at each evaluation point
    eval_seconds: float = 0.0  # of ``seconds``, spent measuring the validation metric
    best_step: int | None = None  # the step whose weights were kept (early stopping restores the best)
    stopped_early: bool = False
    converged: bool | None = None  # None: no validation, or too few evaluation points to tell
    val_improvement: float | None = None  # over the last 20% of steps, in the metric's good direction

    def loss_parameters(self) -> dict[str, float]:
        """The loss's own scalar parameters as trained, for the result file."""
        if self.loss is None:
            return {}
        return {name: float(p.detach()) for name, p in self.loss.named_parameters() if p.numel() == 1}


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> torch.Tensor:
    """``[steps, batch]`` indices: epochs of seeded permutations, identical for every head."""
    if n < batch_size:
        raise ConfigError(f"training set has {n} pairs, fewer than batch_size={batch_size}; lower train.batch_size.")
    g = torch.Generator().manual_seed(int(seed))
    per_epoch = n // batch_size
    epochs = math.ceil(steps / per_epoch) if steps else 0
    perms = [
        torch.randperm(n, generator=g)[: per_epoch * batch_size].view(per_epoch, batch_size) for _ in range(epochs)
    ]
    return torch.cat(perms)[:steps] if perms else torch.empty(0, batch_size, dtype=torch.long)


@dataclass
class Validator:
    """The validation main metric of a suite, measured on data disjoint from training and test."""

    metric: str
    higher_is_better: bool
    tolerance: float  # an improvement larger than this over the last 20% of steps: "not converged"
    measure: Callable  # head -> float (the head is in eval mode, gradients off)


LAST_FRACTION = 0.2  # the tail of training over which a converged head's validation metric stays flat


def convergence(curve: list[dict], higher_is_better: bool, tolerance: float) -> tuple[bool | None, float | None]:
    """(converged, improvement): how much the best validation value improved over the last 20% of the steps
    run; None when no evaluation point lies at or before 80% of them (too few points to tell)."""
    if len(curve) < 2:
        return None, None
    sign = 1.0 if higher_is_better else -1.0
    cut = (1 - LAST_FRACTION) * curve[-1]["step"]
    before = [sign * p["val"] for p in curve if p["step"] <= cut]
    if not before:
        return None, None
    improvement = max(sign * p["val"] for p in curve) - max(before)
    return improvement <= tolerance, improvement


def eval_steps(steps: int, points: int) -> set[int]:
    """Steps (counted after the update) at which validation is measured: every ceil(steps / points), and the last."""
    if points <= 0 or steps <= 0:
        return set()
    every = math.ceil(steps / points)
    return set(range(every, steps + 1, every)) | {steps}


def param_groups(head: torch.nn.Module, weight_decay: float):
    """Decay matrices only; scales, bandwidths, biases and gains keep their meaning (as open_clip does)."""
    decay = [p for p in head.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in head.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def cosine_schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_head(
    head,
    data: PointSets,
    train_cfg: dict,
    seed: int,
    device,
    label: str | None = None,
    progress: bool = True,
    validator: Validator | None = None,
    encoder: torch.nn.Module | None = None,
) -> TrainStats:
    """Train ``head`` for at most ``train_cfg["steps"]`` steps. With a validator, the validation metric is
    measured at ``eval_points`` evenly spaced steps; with ``patience`` > 0 training stops once that many
    points in a row have not improved on the best, and the best point's weights are kept (same rule for
    every head). ``encoder``: the trainable ends of the towers (train.encoder), trained with the head at
    ``train.encoder_lr``; the data's point sets are made by it (bench/features/adapt.py)."""
    label = label or head.name
    params = [p for p in head.parameters() if p.requires_grad]
    encoder_params = [] if encoder is None else [p for p in encoder.parameters() if p.requires_grad]
    if not head.trainable or not (params or encoder_params) or train_cfg["steps"] == 0:
        return TrainStats(0, None, 0.0, None)
    head.to(device).train()
    if encoder is not None:
        encoder.train()
    loss_fn = losses.build(train_cfg.get("loss", "infonce")).to(device)
    params += [p for p in loss_fn.parameters() if p.requires_grad]
    order = batch_order(len(data), train_cfg["batch_size"], train_cfg["steps"], seed)
    groups = param_groups(head, train_cfg["weight_decay"])
    groups[1]["params"] += list(loss_fn.parameters())  # a loss's temperature and bias are never decayed
    if encoder is not None:  # its own learning rate (lower than the head's: it starts trained), same schedule
        groups += [{**g, "lr": train_cfg["encoder_lr"]} for g in param_groups(encoder, train_cfg["weight_decay"])]
        params += encoder_params
    opt = torch.optim.AdamW(groups, lr=train_cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(train_cfg["warmup_steps"], train_cfg["steps"]))
    checkpoints = eval_steps(len(order), train_cfg.get("eval_points", 0)) if validator is not None else set()
    patience = train_cfg.get("patience", 0)
    tracker = _BestTracker(validator, patience, encoder) if checkpoints else None
    loss_value, loss_sum, loss_count, steps_run = None, torch.zeros((), device=device), 0, 0
    start = time.perf_counter()
    eval_seconds = 0.0
    show = progress and distributed.is_main()
    bar = tqdm(order, desc=f"train {label}", unit="step", disable=None if show else True, leave=False)
    for step, global_idx in enumerate(bar):
        idx = distributed.local_slice(global_idx)
        img, im = data.image_batch(idx, device)
        txt, tm = data.text_batch(idx, device)
        head.begin_train_step(step)
        image_rep = distributed.gather(check_rep(head, "image", head.encode_image(img, im), len(idx)))
        text_rep = distributed.gather(check_rep(head, "text", head.encode_text(txt, tm), len(idx)))
        loss = loss_fn(*head.score_directions(image_rep, text_rep))
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"head {label!r}: training loss is {float(loss.detach())} at step {step}. Lower train.lr "
                f"(now {train_cfg['lr']}) or check the head's score() for overflow; nothing was saved for this head."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(params)
        if train_cfg["grad_clip"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, train_cfg["grad_clip"])
            if not torch.isfinite(norm):
                raise TrainingDiverged(
                    f"head {label!r}: gradient norm is {float(norm)} at step {step}; lower train.lr."
                )
        opt.step()
        sched.step()
        steps_run = step + 1
        loss_sum += loss.detach()
        loss_count += 1
        if step % 50 == 0 or step == len(order) - 1:
            loss_value = float(loss.detach())
            bar.set_postfix(loss=f"{loss_value:.4f}")
        if steps_run in checkpoints:
            t_eval = time.perf_counter()
            stop = tracker.point(steps_run, float(loss_sum) / loss_count, head, loss_fn)
            loss_sum, loss_count = torch.zeros((), device=device), 0
            head.train()
            loss_fn.train()
            if encoder is not None:
                encoder.train()
            eval_seconds += time.perf_counter() - t_eval
            if stop:
                loss_value = float(loss.detach())
                break
    seconds = time.perf_counter() - start
    head.eval()
    loss_fn.eval()
    if encoder is not None:
        encoder.eval()
    stats = TrainStats(
        steps_run, loss_value, seconds, steps_run * train_cfg["batch_size"] / max(seconds, 1e-9), loss_fn
    )
    if tracker is not None:
        tracker.restore(head, loss_fn)
        stats.curve, stats.best_step = tracker.curve, tracker.best_step
        stats.stopped_early = steps_run < len(order)
        stats.converged, stats.val_improvement = convergence(
            tracker.curve, validator.higher_is_better, validator.tolerance
        )
        stats.eval_seconds = eval_seconds
    return stats


class _BestTracker:
    """The learning curve, the best validation point's weights, and the patience count."""

    def __init__(self, validator: Validator, patience: int, encoder: torch.nn.Module | None = None):
        self.validator, self.patience, self.encoder = validator, patience, encoder
        self.curve: list[dict] = []
        self.best, self.best_step, self.best_state, self.since_best = None, None, None, 0

    def point(self, step: int, train_loss: float, head, loss_fn) -> bool:
        """Measure, remember the best weights; True when patience has run out."""
        head.eval()
        loss_fn.eval()
        if self.encoder is not None:
            self.encoder.eval()
        with torch.no_grad():
            value = float(self.validator.measure(head))
        self.curve.append({"step": step, "train_loss": train_loss, "val": value})
        sign = 1.0 if self.validator.higher_is_better else -1.0
        if math.isfinite(value) and (self.best is None or sign * value > sign * self.best):
            self.best, self.best_step, self.since_best = value, step, 0
            self.best_state = (
                _copy_state(head),
                _copy_state(loss_fn),
                None if self.encoder is None else _copy_state(self.encoder),
            )
        else:
            self.since_best += 1
        return self.patience > 0 and self.since_best >= self.patience

    def restore(self, head, loss_fn) -> None:
        if self.best_state is not None and self.best_step != self.curve[-1]["step"]:
            head.load_state_dict(self.best_state[0])
            loss_fn.load_state_dict(self.best_state[1])
            if self.encoder is not None:
                self.encoder.load_state_dict(self.best_state[2])


def _copy_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}

"""Contrastive training of a head on cached point sets, under one budget and one loss for every head.

Fairness is the point: the optimiser, schedule, steps, batch size and the exact order of
training pairs depend only on the config and the seed, never on the head.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

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
    head, data: PointSets, train_cfg: dict, seed: int, device, label: str | None = None, progress: bool = True
) -> TrainStats:
    label = label or head.name
    params = [p for p in head.parameters() if p.requires_grad]
    if not head.trainable or not params or train_cfg["steps"] == 0:
        return TrainStats(0, None, 0.0, None)
    head.to(device).train()
    loss_fn = losses.build(train_cfg.get("loss", "infonce")).to(device)
    params += [p for p in loss_fn.parameters() if p.requires_grad]
    order = batch_order(len(data), train_cfg["batch_size"], train_cfg["steps"], seed)
    groups = param_groups(head, train_cfg["weight_decay"])
    groups[1]["params"] += list(loss_fn.parameters())  # a loss's temperature and bias are never decayed
    opt = torch.optim.AdamW(groups, lr=train_cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(train_cfg["warmup_steps"], train_cfg["steps"]))
    loss_value = None
    start = time.perf_counter()
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
        if step % 50 == 0 or step == len(order) - 1:
            loss_value = float(loss.detach())
            bar.set_postfix(loss=f"{loss_value:.4f}")
    seconds = time.perf_counter() - start
    head.eval()
    loss_fn.eval()
    return TrainStats(
        len(order), loss_value, seconds, len(order) * train_cfg["batch_size"] / max(seconds, 1e-9), loss_fn
    )

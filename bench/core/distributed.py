"""torchrun support: one process per GPU (or per CPU worker with gloo), one global batch.

Each rank encodes its slice of every global batch; the representations are gathered with
gradients, so every rank computes the InfoNCE loss over the whole batch with the same negatives a
single process would see (as open_clip's ClipLoss does with gather_with_grad). Gradients are then
averaged across ranks, which makes a step equal to the single-process step up to float rounding.
Rank 0 alone evaluates and writes files.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import torch
import torch.distributed as dist

from bench.core import environment
from bench.core.errors import ConfigError


def launched() -> bool:
    return environment.world_size() > 1


def init(device_name: str | None) -> torch.device | None:
    """Start the process group when run under torchrun; return this rank's device (None if not)."""
    if not launched() or dist.is_initialized():
        return None
    local_rank = environment.local_rank()
    use_cuda = torch.cuda.is_available() and (device_name in (None, "", "auto") or str(device_name).startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    Written with all_reduce rather than reduce_scatter because gloo (the CPU backend) lacks the latter.
    """

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.n = rank(), tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather(rep):
    """Gather a representation (a tensor or a dataclass of tensors) from all ranks, in rank order.

    A dataclass's non-tensor fields (a group size) must agree across ranks and pass through. Fields named
    in its ``ragged_fields`` (token sets padded to their batch's longest set, which differs by rank) are
    padded along dimension 1, with zeros (False for a mask), to the longest across ranks first."""
    if world_size() == 1:
        return rep
    if isinstance(rep, torch.Tensor):
        return _GatherWithGrad.apply(rep)
    if is_dataclass(rep):
        ragged = getattr(rep, "ragged_fields", ())
        width = max(gather_objects(max([getattr(rep, f).shape[1] for f in ragged], default=0))) if ragged else 0
        out = {}
        for f in fields(rep):
            value = getattr(rep, f.name)
            if f.name in ragged and value.shape[1] < width:
                pad = [0, 0] * (value.dim() - 2) + [0, width - value.shape[1]]
                value = torch.nn.functional.pad(value, pad, value=False if value.dtype == torch.bool else 0)
            out[f.name] = gather(value) if isinstance(value, torch.Tensor) else value
        return type(rep)(**out)
    raise TypeError(f"cannot gather a {type(rep).__name__} across ranks; use tensors or a dataclass of tensors.")


def average_gradients(params) -> None:
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def local_slice(indices: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch (ranks in order rebuild the batch)."""
    w = world_size()
    if w == 1:
        return indices
    if indices.shape[0] % w:
        raise ConfigError(f"train.batch_size={indices.shape[0]} must be divisible by the number of processes ({w}).")
    return indices.view(w, -1)[rank()]


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on every rank: a decision all ranks then share."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every rank's (small, picklable) object, in rank order."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(local: torch.Tensor | None) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (shares may differ in length, or be empty: None)."""
    if world_size() == 1:
        return local if local is not None else torch.empty(0)
    shapes = gather_objects(None if local is None else (tuple(local.shape), str(local.dtype).split(".")[-1]))
    known = [s for s in shapes if s is not None]
    if not known:
        return torch.empty(0)
    trailing, dtype = known[0][0][1:], getattr(torch, known[0][1])
    rows = [0 if s is None else s[0][0] for s in shapes]
    device = _comm_device()
    padded = torch.zeros((max(rows), *trailing), dtype=dtype, device=device)
    if local is not None:
        padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in rows]
    dist.all_gather(parts, padded)
    return torch.cat([p[:r] for p, r in zip(parts, rows)]).cpu()

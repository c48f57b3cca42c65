"""Encoding and scoring for evaluation: everything goes through the head's own ``score``."""
from __future__ import annotations

import torch


def _cat(reps):
    """Concatenate representation dataclasses (or tensors) field by field."""
    first = reps[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(reps)
    fields = first.__dataclass_fields__
    return type(first)(**{f: torch.cat([getattr(r, f) for r in reps]) for f in fields})


@torch.no_grad()
def encode(head, side: str, points: torch.Tensor, mask: torch.Tensor | None, device, batch: int = 4096):
    """Encode all sets in batches on ``device``; the representation stays on the device."""
    fn = head.encode_image if side == "image" else head.encode_text
    reps = []
    for start in range(0, points.shape[0], batch):
        p = points[start:start + batch].to(device, non_blocking=True)
        m = None if mask is None else mask[start:start + batch].to(device, non_blocking=True)
        reps.append(fn(p, m))
    return _cat(reps)


class ScoreError(RuntimeError):
    """A head's score() returned something no metric can be computed from."""


@torch.no_grad()
def score_matrix(head, image_rep, text_rep, n_images: int, n_texts: int) -> torch.Tensor:
    scores = head.score(image_rep, text_rep)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n_images, n_texts):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ScoreError(f"head {head.name!r}: score() must return a [{n_images}, {n_texts}] tensor, got {shape}.")
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        raise ScoreError(f"head {head.name!r}: score() returned {int(bad.sum())} NaN/inf values out of {scores.numel()}.")
    return scores.float()

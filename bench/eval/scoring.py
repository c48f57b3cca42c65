"""Encoding and scoring for evaluation: everything goes through the head's own ``score``."""

from __future__ import annotations

import torch


def _cat(reps):
    """Concatenate representation dataclasses (or tensors) field by field; a representation with fields
    shared by every row (e.g. prototypes) says how with a ``concat(reps)`` classmethod."""
    first = reps[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(reps)
    if hasattr(type(first), "concat"):
        return type(first).concat(reps)
    fields = first.__dataclass_fields__
    return type(first)(**{f: torch.cat([getattr(r, f) for r in reps]) for f in fields})


class HeadContractError(RuntimeError):
    """A head returned something the contract does not allow (None from an encoder, say)."""


def check_rep(head, side: str, rep, n: int):
    if rep is None:
        raise HeadContractError(
            f"head {head.name!r}: encode_{side}() returned None; it must return a tensor or a "
            "dataclass of tensors, one row per input set."
        )
    if isinstance(rep, torch.Tensor):
        rows = rep.shape[0] if rep.dim() else None
    elif hasattr(rep, "__dataclass_fields__"):
        rows = len(rep) if hasattr(rep, "__len__") else None
    else:
        raise HeadContractError(
            f"head {head.name!r}: encode_{side}() returned a {type(rep).__name__}; it must return "
            "a tensor or a dataclass of tensors, one row per input set."
        )
    if rows is not None and rows != n:
        raise HeadContractError(f"head {head.name!r}: encode_{side}() returned {rows} rows for {n} input sets.")
    return rep


def rows_of(points, mask, rows: torch.Tensor | slice, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of a dense tensor (with its optional mask), or of a set store that reads them itself
    (``rows(idx) -> (points, mask)``: token sets memory-mapped from the feature cache)."""
    if hasattr(points, "rows"):
        p, m = points.rows(rows)
    else:
        p, m = points[rows], None if mask is None else mask[rows]
    return p.to(device, non_blocking=True), None if m is None else m.to(device, non_blocking=True)


def in_batches(fn, points, mask: torch.Tensor | None, device, batch: int = 4096) -> list:
    """``fn(points, mask)`` on every batch of sets, moved to ``device``: ``points`` is a dense ``[n, p, d]``
    tensor (sliced: a view) or token sets read from disk a batch at a time."""
    n = len(points)
    return [fn(*rows_of(points, mask, slice(start, min(start + batch, n)), device)) for start in range(0, n, batch)]


@torch.no_grad()
def encode(head, side: str, points, mask: torch.Tensor | None, device, batch: int = 4096):
    """Encode all sets in batches on ``device``; the representation stays on the device."""
    fn = head.encode_image if side == "image" else head.encode_text
    return _cat(in_batches(lambda p, m: check_rep(head, side, fn(p, m), p.shape[0]), points, mask, device, batch))


class ScoreError(RuntimeError):
    """A head's score() returned something no metric can be computed from."""


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )


def _score_with_retries(score, head, image_rep, text_rep, retries: int = 4):
    """On out-of-memory, halve the head's scoring budget and try again; then fail with the numbers."""
    budget = head.memory_budget_mb
    for attempt in range(retries + 1):
        try:
            return score(image_rep, text_rep)
        except Exception as exc:  # noqa: BLE001 (only out-of-memory is handled; the rest re-raised)
            if not _is_oom(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if budget is None or attempt == retries:
                tried = "" if budget is None else f" down to memory_budget_mb={head.memory_budget_mb:g}"
                raise ScoreError(
                    f"head {head.name!r}: out of memory while scoring{tried}. Lower "
                    f"heads.{head.name}.memory_budget_mb, or score on a larger device."
                ) from None
            head.memory_budget_mb = head.memory_budget_mb / 2
    raise AssertionError("unreachable")


def _checked(head, scores, n_images: int, n_texts: int, what: str = "score()") -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n_images, n_texts):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ScoreError(f"head {head.name!r}: {what} must return a [{n_images}, {n_texts}] tensor, got {shape}.")
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        raise ScoreError(
            f"head {head.name!r}: {what} returned {int(bad.sum())} NaN/inf values out of {scores.numel()}."
        )
    return scores.float()


@torch.no_grad()
def score_matrix(head, image_rep, text_rep, n_images: int, n_texts: int) -> torch.Tensor:
    """The image-query (i2t) matrix: what zero-shot classification ranks classes by."""
    return _checked(head, _score_with_retries(head.score, head, image_rep, text_rep), n_images, n_texts)


@torch.no_grad()
def score_matrices(head, image_rep, text_rep, n_images: int, n_texts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(i2t, t2i)`` from the head's ``score_directions``; the same tensor twice for most heads."""
    pair = _score_with_retries(head.score_directions, head, image_rep, text_rep)
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise ScoreError(
            f"head {head.name!r}: score_directions() must return a pair (i2t, t2i), got {type(pair).__name__}."
        )
    what = "score_directions()" if head.directional_scores() else "score()"  # name what the head's author wrote
    i2t = _checked(head, pair[0], n_images, n_texts, what)
    t2i = i2t if pair[1] is pair[0] else _checked(head, pair[1], n_images, n_texts, what)
    return i2t, t2i

"""Token point sets on disk: float16, ragged, memory-mapped, read a batch at a time.

Every token of every input would not fit in RAM at COCO size (591,753 training captions), and padding
captions to the context length would store 77 tokens where COCO's average ~14 are real. So a cache
entry holds one flat ``[total real tokens, D]`` float16 file and the offsets of each input's first
token; ``TokenSets.rows(idx)`` gathers a batch, pads it to its own longest set and returns the points
(float32) with a mask. Peak RAM is one batch plus the offsets (8 bytes per input), whatever the size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TOKENS_FILE = "tokens.f16"
OFFSETS_FILE = "offsets.npy"


class TokenWriter:
    """Appends batches of (points ``[B, T, D]``, mask ``[B, T]``) to a folder, keeping only the real tokens."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.file = open(self.folder / TOKENS_FILE, "wb")  # noqa: SIM115 (closed in finish)
        self.offsets = [0]
        self.dim: int | None = None

    def append(self, points: torch.Tensor, mask: torch.Tensor) -> None:
        points, mask = points.detach().cpu(), mask.detach().cpu().bool()
        if self.dim is None:
            self.dim = int(points.shape[-1])
        real = points[mask].to(torch.float16).numpy()  # row-major: set by set, token by token
        self.file.write(real.tobytes())
        self.offsets.extend((self.offsets[-1] + np.cumsum(mask.sum(1).numpy())).tolist())

    def finish(self) -> dict:
        self.file.close()
        np.save(self.folder / OFFSETS_FILE, np.asarray(self.offsets, dtype=np.int64))
        return {
            "rows": len(self.offsets) - 1,
            "dim": self.dim or 0,
            "total_tokens": int(self.offsets[-1]),
            "max_tokens": int(np.diff(self.offsets).max()) if len(self.offsets) > 1 else 0,
        }


class TokenSets:
    """A read-only view of stored token sets, optionally a subset of its rows (``select``)."""

    def __init__(self, folder: Path, dim: int, total_tokens: int, index: np.ndarray | None = None):
        self.folder, self.dim = Path(folder), int(dim)
        self.offsets = np.load(self.folder / OFFSETS_FILE)
        self.tokens = (
            np.memmap(self.folder / TOKENS_FILE, dtype=np.float16, mode="r", shape=(int(total_tokens), self.dim))
            if total_tokens
            else np.zeros((0, self.dim), dtype=np.float16)
        )
        self.total_tokens = int(total_tokens)
        self.index = np.arange(len(self.offsets) - 1) if index is None else np.asarray(index, dtype=np.int64)
        lengths = np.diff(self.offsets)[self.index]
        self.max_tokens = int(lengths.max()) if len(lengths) else 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.index), self.max_tokens, self.dim)

    def __len__(self) -> int:
        return len(self.index)

    def select(self, rows) -> TokenSets:
        """The sets at ``rows`` (indices or a boolean mask) of this view, without reading any token."""
        rows = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        picked = self.index[rows]
        return TokenSets(self.folder, self.dim, self.total_tokens, picked)

    def rows(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Points ``[b, longest, D]`` (float32) and mask of the sets at ``idx`` (positions in this view, or a slice)."""
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        sets = self.index[idx.reshape(-1)]
        starts, ends = self.offsets[sets], self.offsets[sets + 1]
        lengths = ends - starts
        width = int(lengths.max()) if len(lengths) else 0
        points = np.zeros((len(sets), width, self.dim), dtype=np.float32)
        for i, (a, b) in enumerate(zip(starts, ends)):
            points[i, : b - a] = self.tokens[a:b]
        mask = np.arange(width)[None, :] < lengths[:, None]
        return torch.from_numpy(points), torch.from_numpy(mask)

    def __getitem__(self, item):
        """Slicing gives a smaller view (``encode`` reads a slice at a time)."""
        if isinstance(item, slice):
            return self.select(np.arange(len(self))[item])
        return self.select(item)

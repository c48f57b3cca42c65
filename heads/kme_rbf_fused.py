"""Fused exact ``kme_rbf`` scores for evaluation on a GPU, as one Triton kernel.

Each program takes a tile of image sets x text sets, accumulates the augmented point products
(u.v/sigma^2 + log a_i + log b_j, see ``kme_rbf_reference.augment``) over the feature dimension, and reduces
every set pair's m x n block with a log-sum-exp before anything leaves registers. The [N*m, M*n]
logits the PyTorch path streams through memory in chunks are never written, so memory is the
output alone, whatever N and M are. Forward only: training needs gradients and uses the PyTorch
path, which is also the reference this kernel is tested against (on CPU, in Triton's interpreter,
``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import torch

from bench.core import environment
from heads.kme_rbf_reference import NO_WEIGHT, augment
from heads.pointsets import PointSetRep

MAX_POINTS = 64  # per set, after padding to a power of two; beyond this the tile would spill registers


def available(device: torch.device) -> bool:
    """A GPU with Triton; or, for tests, Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    if device.type != "cuda" and not interpreted():
        return False
    try:
        import triton  # noqa: F401 (imported only to learn whether it is installed)
    except ImportError:
        return False
    return True


def interpreted() -> bool:
    return environment.triton_interpret()


def supports(m: int, n: int) -> bool:
    return _pow2(m) <= MAX_POINTS and _pow2(n) <= MAX_POINTS


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def _pad(aug: torch.Tensor, points: int, tail: tuple[float, float]) -> torch.Tensor:
    """Pad the sets to ``points`` points. Image pads end in (-1e4, 1) and text pads in (1, -1e4), so a
    pad's logit against a real point or another pad is <= -1e4: it adds exp(-1e4) = 0 to every sum."""
    n, m, k = aug.shape
    if m == points:
        return aug.contiguous()
    out = aug.new_zeros(n, points, k)
    out[:, :m] = aug
    out[:, m:, k - 2 :] = torch.tensor(tail, dtype=aug.dtype, device=aug.device)
    return out


_kernel = None


def _build_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def kme_lse(
        U, V, S, N, M, K, MP: tl.constexpr, NP: tl.constexpr, BA: tl.constexpr, BB: tl.constexpr, BK: tl.constexpr
    ):
        pid_a, pid_b = tl.program_id(0), tl.program_id(1)
        rows = (pid_a * BA * MP + tl.arange(0, BA * MP)).to(tl.int64)  # (image set, point), flattened
        cols = (pid_b * BB * NP + tl.arange(0, BB * NP)).to(tl.int64)  # (text set, point), flattened
        row_ok, col_ok = rows < N * MP, cols < M * NP
        acc = tl.zeros((BA * MP, BB * NP), dtype=tl.float32)
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            u = tl.load(U + rows[:, None] * K + ks[None, :], mask=row_ok[:, None] & (ks[None, :] < K), other=0.0)
            v = tl.load(V + cols[:, None] * K + ks[None, :], mask=col_ok[:, None] & (ks[None, :] < K), other=0.0)
            acc += tl.dot(u, tl.trans(v), input_precision="ieee")  # no TF32: 1/sigma^2 up to 100 magnifies it
        logits = tl.reshape(acc, (BA, MP, BB, NP))
        top = tl.max(tl.max(logits, axis=3), axis=1)
        total = tl.sum(tl.sum(tl.exp(logits - top[:, None, :, None]), axis=3), axis=1)
        a = pid_a * BA + tl.arange(0, BA)
        b = pid_b * BB + tl.arange(0, BB)
        tl.store(
            S + a[:, None].to(tl.int64) * M + b[None, :], tl.log(total) + top, mask=(a[:, None] < N) & (b[None, :] < M)
        )

    return kme_lse


def log_inner(image_rep: PointSetRep, text_rep: PointSetRep, inv_sigma2: torch.Tensor) -> torch.Tensor:
    """Exact score matrix [N, M], equal to ``kme_rbf_reference.kme_log_inner`` up to float rounding."""
    import triton

    global _kernel
    if _kernel is None:
        _kernel = _build_kernel()
    with torch.no_grad():
        U = augment(image_rep.points, image_rep.log_weights, inv_sigma2, first=True)
        V = augment(text_rep.points, text_rep.log_weights, None, first=False)
        n_img, m, k = U.shape
        n_txt, n = V.shape[:2]
        MP, NP = max(_pow2(m), 1), max(_pow2(n), 1)
        U, V = _pad(U, MP, (NO_WEIGHT, 1.0)), _pad(V, NP, (1.0, NO_WEIGHT))
        BA, BB = 64 // MP, 64 // NP  # 64 x 64 point tiles (MP, NP <= 64 are powers of two; tl.dot wants >= 16)
        out = torch.empty(n_img, n_txt, dtype=torch.float32, device=U.device)
        grid = (triton.cdiv(n_img, BA), triton.cdiv(n_txt, BB))
        _kernel[grid](U, V, out, n_img, n_txt, k, MP=MP, NP=NP, BA=BA, BB=BB, BK=32)
    return out - inv_sigma2

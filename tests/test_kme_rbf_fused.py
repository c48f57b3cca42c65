"""The fused Triton kme_rbf kernel against the PyTorch reference, run on CPU in Triton's interpreter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heads import get_head

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("triton")

CHECK = r"""
import math, torch
from heads import get_head, kme_rbf_fused
from heads.kme_rbf_reference import kme_log_inner
from heads.pointsets import PointSetRep

def rep(g, n, m, d, masked):
    points = torch.nn.functional.normalize(torch.randn(n, m, d, generator=g), dim=-1)
    lw = torch.log_softmax(torch.randn(n, m, generator=g), dim=-1)
    if masked and m > 1:
        lw[::2, -1] = float("-inf")  # a padded point in every other set
    return PointSetRep(points, lw)

g = torch.Generator().manual_seed(0)
# (images, texts, m, n, d): powers of two and not, one point, several tiles each way, d not a multiple of 32
shapes = [(5, 7, 3, 5, 20), (17, 9, 8, 8, 64), (3, 40, 1, 2, 33),
          (70, 11, 4, 3, 16), (9, 130, 2, 1, 40), (6, 5, 16, 12, 8)]
worst = 0.0
for (N, M, m, n, d) in shapes:
    for inv in (1.0, 14.3, 100.0):
        a, b = rep(g, N, m, d, True), rep(g, M, n, d, True)
        fused = kme_rbf_fused.log_inner(a, b, torch.tensor(inv))
        ref = kme_log_inner(a, b, torch.tensor(inv))
        assert fused.shape == (N, M)
        err = (fused - ref).abs().max().item()
        worst = max(worst, err)
        assert err < 1e-4 * max(1.0, inv), (N, M, m, n, d, inv, err)

# Through the head: kernel=triton scores equal kernel=torch scores with the same weights.
torch.manual_seed(0)
fast = get_head("kme_rbf")(24, 24, kernel="triton").eval()
slow = get_head("kme_rbf")(24, 24, kernel="torch").eval()
slow.load_state_dict(fast.state_dict())
x, t = torch.randn(13, 4, 24, generator=g), torch.randn(21, 4, 24, generator=g)
with torch.no_grad():
    sf = fast.score(fast.encode_image(x), fast.encode_text(t))
    ss = slow.score(slow.encode_image(x), slow.encode_text(t))
assert (sf - ss).abs().max().item() < 1e-4
try:  # no backward pass: asking for one is an error that names the fix
    fast.score(fast.encode_image(x), fast.encode_text(t))
except ValueError as exc:
    assert "no backward pass" in str(exc)
else:
    raise AssertionError("kernel=triton with gradients should refuse")

# The benchmark's GPU branch (fused row + its PyTorch reference beside it), with "GPU" faked as the interpreter.
from bench.tools import perf
from heads.kme_rbf import KmeRbfHead
KmeRbfHead.uses_fused_kernel = lambda self, a, b: self.kernel != "torch" and not torch.is_grad_enabled()
report = perf.run(12, 20, 3, 8, 16, 8, torch.device("cpu"), 1, 1.0, 1.0, log=lambda s: None)
assert report["sizes"]["kme_rbf_kernel"] == "triton" and report["ratios"]["time_reference_over_fused_kme_rbf"] > 0
print(f"OK worst abs error {worst:.2e}")
"""


def test_fused_kernel_matches_pytorch_reference_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK worst" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_kernel_option_is_checked_and_auto_keeps_cpu_on_the_reference(monkeypatch):
    with pytest.raises(ValueError, match="kernel must be one of auto, torch, triton"):
        get_head("kme_rbf")(4, 4, kernel="cuda")
    from heads import kme_rbf_fused

    called = []
    monkeypatch.setattr(kme_rbf_fused, "log_inner", lambda *a: called.append(1))
    head = get_head("kme_rbf")(8, 8).eval()
    with torch.no_grad():
        s = head.score(head.encode_image(torch.randn(3, 2, 8)), head.encode_text(torch.randn(4, 2, 8)))
    assert s.shape == (3, 4) and not called and head.last_kernel == "torch"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA device"), torch.no_grad():
            get_head("kme_rbf")(8, 8, kernel="triton").score(
                head.encode_image(torch.randn(3, 2, 8)), head.encode_text(torch.randn(4, 2, 8))
            )


def test_auto_falls_back_to_the_reference_when_the_kernel_fails(monkeypatch, caplog):
    """A GPU where Triton cannot compile the kernel still gets exact scores under kernel=auto."""
    from heads import kme_rbf_fused

    def broken(*a):
        raise RuntimeError("triton compilation failed")

    head = get_head("kme_rbf")(8, 8).eval()
    monkeypatch.setattr(
        type(head), "uses_fused_kernel", lambda self, a, b: self.kernel == "auto" and not self.fused_failed
    )
    monkeypatch.setattr(kme_rbf_fused, "log_inner", broken)
    x, y = torch.randn(3, 2, 8), torch.randn(4, 2, 8)
    with torch.no_grad():
        img, txt = head.encode_image(x), head.encode_text(y)
        s = head.score(img, txt)
        assert torch.allclose(s, get_head("kme_rbf")(8, 8, kernel="torch").score(img, txt))
        head.score(img, txt)
    assert sum("fused Triton kernel failed" in r.message for r in caplog.records) == 1  # said once, not per call
    assert head.fused_failed and head.last_kernel == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs it)")
def test_fused_kernel_on_gpu_matches_float64_brute_force():
    from heads import kme_rbf_fused
    from heads.kme_rbf_reference import kme_log_inner
    from heads.pointsets import PointSetRep

    g = torch.Generator().manual_seed(0)
    for n_img, n_txt, m, n, d in [(300, 500, 8, 8, 512), (77, 1000, 5, 3, 96)]:
        pts = [
            torch.nn.functional.normalize(torch.randn(k, p, d, generator=g), dim=-1)
            for k, p in ((n_img, m), (n_txt, n))
        ]
        lws = [torch.log_softmax(torch.randn(k, p, generator=g), dim=-1) for k, p in ((n_img, m), (n_txt, n))]
        lws[0][::3, -1] = float("-inf")
        inv = torch.tensor(20.0)
        a, b = (PointSetRep(p.cuda(), w.cuda()) for p, w in zip(pts, lws))
        fused = kme_rbf_fused.log_inner(a, b, inv.cuda()).cpu().double()
        ref = kme_log_inner(a, b, inv.cuda()).cpu().double()
        sq = 2 - 2 * torch.einsum("imd,jnd->imjn", pts[0].double(), pts[1].double())
        brute = torch.logsumexp(
            lws[0].double()[:, :, None, None] + lws[1].double()[None, None] - sq / 2 * 20.0, dim=(1, 3)
        )
        assert (fused - brute).abs().max() < 1e-3 and (ref - brute).abs().max() < 1e-3
        assert (fused - ref).abs().max() < 1e-3

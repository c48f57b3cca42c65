"""Speed benchmark: heads side by side on the same inputs, in one process, as ratios.

    python -m bench.tools.perf            # 2,000 x 10,000 sets, 8 points, d=512 on CPU; COCO size on a GPU
    python -m bench.tools.perf --quick    # every size shrunk: under a minute on 2 CPU cores

Rows: scoring an N x M matrix with ``cosine``, ``kme_rbf`` (on a GPU the fused Triton kernel, with
its PyTorch reference timed beside it), ``kme_rff`` (D=1024); a naive
``kme_rbf`` that materialises every kernel value (skipped, with a note, where it would not fit);
a plain matrix product with the kernel head's FLOP count ([N, m*n*d] @ [m*n*d, M], the best case
for the hardware); and one training step per head at batch 1024. Ratios are what to read: absolute
times depend on the machine, ratios measured side by side much less.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import heads
from bench.core import atomic
from bench.eval.metrics import symmetric_infonce
from bench.report import provenance

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


class PeakMemory:
    """Peak extra memory during a block: CUDA's allocator counter, or sampled RSS on a CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = self.peak_rss = _rss()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak_rss = max(self.peak_rss, _rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self.thread.join()
            self.peak = max(self.peak_rss, _rss()) - self.base
        return False


def timed(fn, device, repeats: int) -> tuple[float, int]:
    """Median seconds over ``repeats`` after one warm-up call, and peak extra memory in bytes."""
    fn()
    times, peak = [], 0
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        del out
        peak = max(peak, mem.peak)
    return sorted(times)[len(times) // 2], peak


def unit_sets(n, m, d, device, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, m, d, generator=g), dim=-1).to(device)


def naive_kme(img, txt, sigma: float) -> torch.Tensor:
    """Every kernel value at once: [N, m, M, n]. The reference the chunked head must beat."""
    sq = 2 - 2 * torch.einsum("imd,jnd->imjn", img.points, txt.points)
    k = torch.exp(-sq / (2 * sigma**2))
    inner = torch.einsum("im,imjn,jn->ij", img.weights, k, txt.weights)
    return inner.log()


def bootstrap_row(n_images: int, per_image: int = 5, resamples: int = 10_000) -> dict:
    """The intervals of retrieval's seven metrics at COCO size: 5,000 images, 25,000 captions grouped
    by image, 10,000 resamples (on the CPU, where leaderboards are built)."""
    from bench.eval import uncertainty
    from suites.retrieval import RETRIEVAL_SPEC

    rng = np.random.default_rng(0)
    arrays = {"t2i/unit": np.repeat(np.arange(n_images), per_image), "t2i/n_units": n_images}
    for side, queries in (("i2t", n_images), ("t2i", n_images * per_image)):
        arrays.update(
            {
                f"{side}/rank": rng.geometric(0.05, queries) - 1,
                f"{side}/tied_neg": np.zeros(queries, int),
                f"{side}/tied_pos": np.ones(queries, int),
            }
        )
    start = time.perf_counter()
    uncertainty.bootstrap(uncertainty.estimators(arrays, RETRIEVAL_SPEC), resamples)
    seconds = time.perf_counter() - start
    return {
        "row": f"bootstrap 7 retrieval metrics, {n_images:,} images x {n_images * per_image:,} captions, "
        f"{resamples:,} resamples",
        "seconds": seconds,
        "peak_mb": None,
        "pairs_per_s": None,
        "gflops_per_s": None,
    }


def run(
    n: int,
    m_texts: int,
    points: int,
    dim: int,
    features: int,
    batch: int,
    device: torch.device,
    repeats: int,
    budget_mb: float,
    naive_max_gb: float,
    log=print,
) -> dict:
    torch.manual_seed(0)
    x, y = unit_sets(n, points, dim, device, 1), unit_sets(m_texts, points, dim, device, 2)
    made = {
        "cosine": heads.get_head("cosine")(dim, dim),
        "kme_rbf": heads.get_head("kme_rbf")(dim, dim, memory_budget_mb=budget_mb),
        "kme_rff": heads.get_head("kme_rff")(dim, dim, num_features=features, memory_budget_mb=budget_mb),
    }
    rows, notes = [], []
    kernel_flops = 2.0 * n * points * m_texts * points * dim
    with torch.no_grad():
        reps = {}
        for name, head in made.items():
            head.to(device).eval()
            reps[name] = (head.encode_image(x), head.encode_text(y))
            seconds, peak = timed(lambda h=head, r=reps[name]: h.score(*r), device, repeats)
            flops = (
                2.0
                * n
                * m_texts
                * (dim if name == "cosine" else features if name == "kme_rff" else points * points * dim)
            )
            rows.append(
                {
                    "row": f"score {name}",
                    "seconds": seconds,
                    "peak_mb": peak / 2**20,
                    "pairs_per_s": n * m_texts / seconds,
                    "gflops_per_s": flops / seconds / 1e9,
                }
            )
            log(f"score {name}: {seconds:.3f}s")
        fused = made["kme_rbf"].last_kernel == "triton"  # what the timed score() calls above took
        if fused:  # on a GPU "score kme_rbf" is the fused Triton kernel: time its PyTorch reference beside it
            ref = heads.get_head("kme_rbf")(dim, dim, memory_budget_mb=budget_mb, kernel="torch").to(device).eval()
            ref.load_state_dict(made["kme_rbf"].state_dict())
            seconds, peak = timed(lambda: ref.score(*reps["kme_rbf"]), device, repeats)
            rows.append(
                {
                    "row": "score kme_rbf pytorch reference",
                    "seconds": seconds,
                    "peak_mb": peak / 2**20,
                    "pairs_per_s": n * m_texts / seconds,
                    "gflops_per_s": kernel_flops / seconds / 1e9,
                }
            )
            log(f"score kme_rbf pytorch reference: {seconds:.3f}s")
        need_gb = 3 * n * points * m_texts * points * 4 / 2**30
        if need_gb <= naive_max_gb:
            sigma = float(made["kme_rbf"].sigma)
            seconds, peak = timed(lambda: naive_kme(*reps["kme_rbf"], sigma), device, max(1, repeats // 2))
            rows.append(
                {
                    "row": "score kme_rbf naive",
                    "seconds": seconds,
                    "peak_mb": peak / 2**20,
                    "pairs_per_s": n * m_texts / seconds,
                    "gflops_per_s": kernel_flops / seconds / 1e9,
                }
            )
            log(f"score kme_rbf naive: {seconds:.3f}s")
        else:
            notes.append(f"naive kme_rbf skipped: it needs ~{need_gb:.1f} GB (> --naive-max-gb {naive_max_gb}).")
        k = points * points * dim
        a = torch.randn(n, k, device=device)
        b = torch.randn(k, m_texts, device=device)
        seconds, peak = timed(lambda x=a, w=b: x @ w, device, repeats)
        rows.append(
            {
                "row": "matmul same FLOPs as kme_rbf",
                "seconds": seconds,
                "peak_mb": peak / 2**20,
                "pairs_per_s": n * m_texts / seconds,
                "gflops_per_s": kernel_flops / seconds / 1e9,
            }
        )
        log(f"matmul: {seconds:.3f}s")
        del a, b

    xb, yb = unit_sets(batch, points, dim, device, 3), unit_sets(batch, points, dim, device, 4)
    for name, head in made.items():
        head.train()
        opt = torch.optim.AdamW(head.parameters(), lr=1e-4)

        def step(h=head, o=opt):
            loss = symmetric_infonce(h.score(h.encode_image(xb), h.encode_text(yb)))
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
            return loss

        seconds, peak = timed(step, device, repeats)
        rows.append(
            {
                "row": f"train step {name} (batch {batch})",
                "seconds": seconds,
                "peak_mb": peak / 2**20,
                "pairs_per_s": batch / seconds,
                "gflops_per_s": None,
            }
        )
        log(f"train {name}: {seconds:.3f}s")

    t = {r["row"]: r["seconds"] for r in rows}
    # Every ratio is a time divided by a time, named time_A_over_B: above 1, A is slower than B.
    ratios = {
        "time_kme_rbf_over_matmul": t["score kme_rbf"] / t["matmul same FLOPs as kme_rbf"],
        "time_kme_rff_over_cosine": t["score kme_rff"] / t["score cosine"],
        "time_naive_over_kme_rbf": (t["score kme_rbf naive"] / t["score kme_rbf"])
        if "score kme_rbf naive" in t
        else None,
    }
    if "score kme_rbf pytorch reference" in t:
        ratios["time_reference_over_fused_kme_rbf"] = t["score kme_rbf pytorch reference"] / t["score kme_rbf"]
    return {
        "sizes": {
            "n_images": n,
            "n_texts": m_texts,
            "points": points,
            "dim": dim,
            "rff_features": features,
            "train_batch": batch,
            "memory_budget_mb": budget_mb,
            "kme_rbf_kernel": "triton" if fused else "torch",
        },
        "rows": rows,
        "ratios": ratios,
        "notes": notes,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tools.perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shrink every size (under a minute on 2 CPU cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write rows and ratios to this file")
    p.add_argument("--out", default="results/perf", help="folder for the provenance-stamped record")
    p.add_argument("--n", type=int, default=None, help="images (default 2,000 CPU / 5,000 GPU)")
    p.add_argument("--m", type=int, default=None, help="texts (default 10,000 CPU / 25,000 GPU)")
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--features", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-mb", type=float, default=256.0, help="kernel heads' scoring memory budget")
    p.add_argument("--naive-max-gb", type=float, default=4.0)
    p.add_argument(
        "--bootstrap-images", type=int, default=5000, help="test images of the bootstrap timing (COCO: 5,000)"
    )
    args = p.parse_args(argv)
    device = provenance.resolve_device(args.device)
    gpu = device.type == "cuda"
    n = args.n or (500 if args.quick else 5000 if gpu else 2000)
    m = args.m or (2000 if args.quick else 25000 if gpu else 10000)
    batch = min(args.batch, 256) if args.quick and args.batch == 1024 else args.batch
    report = run(
        n,
        m,
        args.points,
        args.dim,
        args.features,
        batch,
        device,
        args.repeats,
        args.budget_mb,
        args.naive_max_gb,
        log=lambda s: print(s, file=sys.stderr),
    )
    report["rows"].append(bootstrap_row(args.bootstrap_images))
    record = {
        "created_utc": provenance.utc_now(),
        **provenance.code_version(),
        "device": provenance.device_description(device),
        "libraries": provenance.library_versions(),
        **report,
    }
    s = report["sizes"]
    print(
        f"sizes: {s['n_images']:,} image sets x {s['n_texts']:,} text sets, {s['points']} points of dim {s['dim']}; "
        f"kme_rff D = {s['rff_features']}; train batch {s['train_batch']}; memory budget {s['memory_budget_mb']:g} MB; "
        f"kme_rbf kernel: {s['kme_rbf_kernel']}; device: {record['device']}"
    )
    shown = [
        {k: ("n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}
        for row in report["rows"]
    ]  # training rows have no FLOP count: n/a, not nan
    print(pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True))
    print("\nratios (time of A / time of B; above 1, A is slower):")
    for k, v in report["ratios"].items():
        print(f"  {k} = {'n/a (not run)' if v is None else f'{v:.3f}'}")
    for note in report["notes"]:
        print(f"note: {note}")
    stamp = record["created_utc"].replace(":", "").replace("-", "")
    written = Path(args.out) / f"perf-{device.type}-{stamp}.json"
    atomic.write_json(written, record)
    if args.json:
        atomic.write_json(args.json, record)
    print(f"\nrecord written to {written}" + (f" and {args.json}" if args.json else "") + " (--out changes the folder)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

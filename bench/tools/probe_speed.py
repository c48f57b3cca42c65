"""How long one linear-probe fit takes at ImageNet size: ``python -m bench.tools.probe_speed``.

ImageNet-1k's train split is 1,281,167 images; with 512-dimensional features and 1,000 classes one
fit is 20 epochs of 2,503 batches of 512. This times ``--steps`` of those batches (per-step cost does
not depend on how many rows there are) on random features of that shape, and extrapolates to one
fit and to the whole sweep (20 fits: 7 coarse, 12 refining, the final one). On a GPU pass
``--device cuda`` (and ``--rows 1281167`` to hold the real size in memory).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from bench.eval import linear_probe

IMAGENET_TRAIN = 1_281_167


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=160_000, help="rows held (the per-step cost does not depend on it)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(args.rows, args.dim, generator=g), dim=-1)
    y = torch.randint(0, args.classes, (args.rows,), generator=g)
    n = min(args.rows, args.steps * args.batch_size)  # one epoch of exactly --steps batches, loading included
    loader = linear_probe._loader(x[:n], y[:n], args.batch_size, True)
    start = time.perf_counter()
    linear_probe.fit(loader, args.dim, args.classes, 1e-4, 0.1, 1, 0, torch.device(args.device))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / len(loader)
    steps_per_fit = 20 * math.ceil(IMAGENET_TRAIN * 0.9 / args.batch_size)  # train after a 10% validation carve
    figures = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "measured_steps": args.steps,
        "seconds_per_step": round(per_step, 5),
        "steps_per_fit": steps_per_fit,
        "one_fit_minutes": round(per_step * steps_per_fit / 60, 1),
        "sweep_of_20_fits_hours": round(per_step * steps_per_fit * 20 / 3600, 2),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

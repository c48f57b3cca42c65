"""The one place simbench reads environment variables; it never writes any.

Each is a default below the command line: a flag or a config value always wins (see
bench/run/config.py for the whole precedence)."""

from __future__ import annotations

import os


def data_root() -> str | None:
    """$SIMBENCH_DATA: the datasets folder when neither --data-root nor a suite's data_root is given."""
    return os.environ.get("SIMBENCH_DATA") or None


def feature_cache() -> str | None:
    """$SIMBENCH_CACHE: the feature cache when a suite's cache_dir is not given."""
    return os.environ.get("SIMBENCH_CACHE") or None


def world_size() -> int:
    """torchrun's WORLD_SIZE (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """torchrun's LOCAL_RANK: which GPU of this machine a process uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def triton_interpret() -> bool:
    """TRITON_INTERPRET=1: Triton kernels run in its CPU interpreter (tests of the fused kernel)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def worker_env(index: int, device_type: str) -> dict[str, str]:
    """The environment of tuning worker ``index`` (a copy; this process's own is not changed): one GPU
    each, round robin, when the run is on CUDA."""
    env = dict(os.environ)
    if device_type == "cuda":
        import torch

        env["CUDA_VISIBLE_DEVICES"] = str(index % max(1, torch.cuda.device_count()))
    return env


def child_env(**values: str) -> dict[str, str]:
    """A copy of this process's environment with ``values`` set, for a subprocess (benchmarks that vary
    ATEN_CPU_CAPABILITY or the thread count); this process's own environment is not changed."""
    return {**os.environ, **values}

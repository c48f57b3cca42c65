"""Where a number came from: code version, libraries, machine. Stamped into every result file."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

import bench
from bench.core import snapshot
from bench.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict:
    """Package version, git commit and whether the project's code differs from it; computed once per
    ``snapshot.frozen()`` block, so a long run names the commit it started from."""
    return snapshot.memo("code_version", _code_version)


def _code_version() -> dict:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", "bench", "heads", "suites", "run_bench.py")
    return {
        "package_version": bench.__version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def library_versions() -> dict:
    libs = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("open_clip_torch", "numpy", "clip-benchmark", "pandas"):
        libs[dist] = _version(dist)
    return libs


# The libraries whose version can change a reported number; part of every result cell's key.
NUMERIC_LIBRARIES = ("open_clip_torch", "numpy", "clip-benchmark", "pillow")


@lru_cache(maxsize=1)
def numeric_library_versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{dist: _version(dist) for dist in NUMERIC_LIBRARIES},
    }


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def peak_memory_mb(device: torch.device) -> dict:
    """Process peak RSS (Linux reports KiB) and, on a GPU, the peak allocated since the last reset."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)
    out = {"peak_rss_mb": round(rss, 1)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"--device {name!r} is not a device torch knows ({exc}); use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"--device {name!r}: simbench trains and scores on cpu or cuda only; use auto, cpu, cuda or cuda:N."
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r} asked for CUDA, but torch sees no GPU here; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {name!r}: torch sees {torch.cuda.device_count()} GPU(s) here (cuda:0.."
            f"cuda:{torch.cuda.device_count() - 1})."
        )
    return device

"""Shared helpers for the pipeline tests."""
from pathlib import Path

import yaml

SMALL = {
    "seed": 0,
    "train": {"steps": 20, "batch_size": 64, "warmup_steps": 5},
    "suites": {"synthetic": {"train_pairs": 1000, "test_pairs": 150, "prompts_per_class": 3}},
    "heads": {"kme_rff": {"num_features": 256}},
}


def small_config(tmp_path: Path, **overrides) -> Path:
    cfg = {**SMALL, **overrides}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path

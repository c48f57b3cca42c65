"""The resolved configuration of a run: defaults, a YAML file, then command-line overrides.

Every key is checked against the defaults (or a head's constructor, or a suite's parameters),
so a typo fails before any work with the closest valid names, instead of silently running the
default. The hash of the resolved config is what result files and resumes are keyed by.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import yaml

from bench.registry import suggest


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says how."""


TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 600,          # optimiser steps, identical for every trainable head
    "batch_size": 256,     # pairs per step; the InfoNCE negatives are the rest of the batch
    "lr": 2e-3,
    "weight_decay": 0.1,   # applied to matrices only, never to scales, bandwidths or biases
    "warmup_steps": 50,
    "grad_clip": 1.0,      # max global grad norm; 0 disables
}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "train": TRAIN_DEFAULTS,
    "heads": {},    # per-head constructor options, e.g. {"kme_rff": {"num_features": 2048}}
    "suites": {},   # per-suite parameters over the suite's own defaults
}


def _check_keys(given: dict, allowed, where: str) -> None:
    if not isinstance(given, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(given).__name__}: {given!r}.")
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"Unknown key {key!r} in {where}.{suggest(key, allowed)} Valid keys: {', '.join(sorted(allowed))}."
            )


def _check_type(value, default, where: str):
    """Accept ints for floats; otherwise the type of the default is the type of the value."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}.")
        return value
    if isinstance(default, (int, float)) and not isinstance(value, bool) and isinstance(value, (int, float)):
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where} must be an integer, got {value!r}.")
        return type(default)(value)
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(default, dict) and isinstance(value, dict):
        return value
    raise ConfigError(f"{where} must be of type {type(default).__name__} (like the default {default!r}), got {value!r}.")


def merge_checked(defaults: dict, given: dict, where: str) -> dict:
    """Defaults overlaid with ``given``; unknown keys and wrong types are errors."""
    _check_keys(given, defaults, where)
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        out[key] = _check_type(value, defaults[key], f"{where}.{key}")
    return out


def head_options(cls, given: dict, where: str) -> dict:
    """Validate options against the head constructor's keyword arguments (and their defaults)."""
    params = {
        name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "image_dim", "text_dim") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return {k: v for k, v in merge_checked(params, given or {}, where).items() if k in (given or {})}


def load_yaml(path: str | Path | None) -> dict:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist; pass an existing YAML file to --config.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping at the top level, got {type(data).__name__}.")
    return data


def resolve(user: dict) -> dict:
    """The top-level config with ``train`` checked; heads and suites are checked by their owners."""
    _check_keys(user, DEFAULTS, "the config")
    cfg = copy.deepcopy(DEFAULTS)
    cfg["seed"] = _check_type(user.get("seed", cfg["seed"]), 0, "seed")
    cfg["train"] = merge_checked(TRAIN_DEFAULTS, user.get("train") or {}, "train")
    for section in ("heads", "suites"):
        value = user.get(section) or {}
        _check_keys(value, value, section)  # mapping check only; names are checked against registries
        cfg[section] = copy.deepcopy(value)
    t = cfg["train"]
    if t["steps"] < 0 or t["batch_size"] < 2 or t["lr"] <= 0 or t["warmup_steps"] < 0:
        raise ConfigError(f"train needs steps >= 0, batch_size >= 2, lr > 0 and warmup_steps >= 0; got {t}.")
    return cfg


def config_hash(obj: Any) -> str:
    """Stable hash of a JSON-able object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

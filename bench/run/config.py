"""The resolved configuration of a run, and the one place where its layers are merged.

Precedence, lowest first (each layer overrides the ones before it, key by key):

1. ``DEFAULTS`` here (seed, repeats, train) and each head's constructor defaults;
2. the suite's YAML (``suites/NAME.yaml``: its parameters);
3. the suite's ``head_defaults`` (options it gives every head that has them, e.g. synthetic's out_dim 4);
4. the ``--config`` file (``seed``, ``repeats``, ``train``, ``heads``, ``suites``);
5. command-line flags: ``--seed``, ``--repeats`` and, for every suite that has the parameter,
   ``--backbone``, ``--data-root``, ``--skip-corrupt``.

Environment variables ($SIMBENCH_DATA, $SIMBENCH_CACHE) are defaults below all of these, read in
bench/core/environment.py. ``with_flags`` applies layer 5 over layer 4; ``merge_checked``,
``shared_head_options`` and ``head_options`` apply layers 1-3 beneath them, per suite and head.

Every key is checked against the defaults (or a head's constructor, or a suite's parameters),
so a typo fails before any work with the closest valid names, instead of silently running the
default. The hash of the resolved config is what result files and resumes are keyed by.
"""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path
from typing import Any

import yaml

from bench.core import hashing
from bench.core.errors import ConfigError  # noqa: F401 (raised here, and imported from here by callers)
from bench.core.registry import suggest

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 1500,  # at most this many optimiser steps, identical for every trainable head
    "batch_size": 256,  # pairs per step; the InfoNCE negatives are the rest of the batch
    "lr": 1e-2,
    "weight_decay": 0.1,  # applied to matrices only, never to scales, bandwidths or biases
    "warmup_steps": 50,
    "grad_clip": 1.0,  # max global grad norm; 0 disables
    # Validation: the suite's validation metric at this many evenly spaced steps (the learning curve);
    # patience > 0 stops a head once that many points in a row have not improved on its best, and keeps
    # the best point's weights. The same rule for every head.
    "eval_points": 15,
    "patience": 4,
    "loss": "infonce",  # infonce | siglip (bench/run/losses.py); part of the protocol, so tables never mix losses
}

# Encoder adaptation (bench/features/adapt.py): absent from a resolved config when frozen, so the
# frozen protocol (and every result keyed by it) is the one it was before encoders could train.
ENCODER_DEFAULTS: dict[str, Any] = {
    "encoder": "frozen",  # frozen | last_blocks:N | all_blocks
    "encoder_lr": 1e-5,  # the trainable blocks' learning rate (they start trained: far below the head's)
}

MAX_REPEATS = 100
MAX_SEED = 2**63 - 2  # torch generators take up to 2^64 - 1; the synthetic world adds 1 to its seed

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "repeats": 1,  # runs of every cell, each varying every random choice that is not the test data
    "train": TRAIN_DEFAULTS,
    # per-head constructor options, e.g. {"kme_rff": {"num_features": 2048}}; "*": every head that has the option
    "heads": {},
    "suites": {},  # per-suite parameters over the suite's own defaults
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
    if isinstance(default, float) and isinstance(value, str):
        value = yaml_number(value, where)  # YAML 1.1 reads 1e-3 (no dot) as text; everyone writes it
    if isinstance(default, (int, float)) and not isinstance(value, bool) and isinstance(value, (int, float)):
        if isinstance(value, float):
            _finite(value, where)
        if (
            isinstance(default, int)
            and not isinstance(default, bool)
            and isinstance(value, float)
            and not value.is_integer()
        ):
            raise ConfigError(f"{where} must be an integer, got {value!r}.")
        return type(default)(value)
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(default, dict) and isinstance(value, dict):
        return value
    raise ConfigError(
        f"{where} must be of type {type(default).__name__} (like the default {default!r}), got {value!r}."
    )


def yaml_number(text: str, where: str):
    """A number written in a form YAML leaves as text (``1e-3``, ``5E-4``); other text stays text."""
    import re

    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", text.strip()):
        return float(text)
    return text


def merge_checked(defaults: dict, given: dict, where: str) -> dict:
    """Defaults overlaid with ``given``; unknown keys and wrong types are errors."""
    _check_keys(given, defaults, where)
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        out[key] = _check_type(value, defaults[key], f"{where}.{key}")
    return out


EVERY_HEAD = "*"


def constructor_options(cls) -> dict:
    """A head's constructor options and their defaults (``inspect.Parameter.empty`` where none)."""
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "image_dim", "text_dim") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def shared_head_options(section: dict, chosen: dict, suite_defaults: dict | None = None) -> dict[str, dict]:
    """``heads: {"*": {out_dim: 4}}`` as per-head options: each option goes to every chosen head whose
    constructor has it (a head's own section still wins); an option no chosen head has is an error,
    so a typo is not silently dropped. A suite's ``head_defaults`` come first, below both."""
    every = section.get(EVERY_HEAD) or {}
    _check_keys(every, every, f"heads.{EVERY_HEAD}")
    accepted = {name: constructor_options(cls) for name, cls in chosen.items()}
    for key in every:
        if not any(key in opts for opts in accepted.values()):
            known = sorted({k for opts in accepted.values() for k in opts})
            raise ConfigError(
                f"heads.{EVERY_HEAD}.{key}: none of the heads in this run ({', '.join(chosen)}) has an "
                f"option {key!r}.{suggest(key, known)} Their options: {', '.join(known)}."
            )
    merged = {**(suite_defaults or {}), **every}
    return {name: {k: v for k, v in merged.items() if k in opts} for name, opts in accepted.items()}


def head_options(cls, given: dict, where: str) -> dict:
    """Every constructor option of a head, defaults included, with the given ones checked.

    All options, not only those set, go into the cell's config: a changed default then changes the
    config hash, and the result file shows what actually ran.
    """
    empty = inspect.Parameter.empty
    params = constructor_options(cls)
    given = given or {}
    _check_keys(given, params, where)
    missing = [n for n, d in params.items() if d is empty and n not in given]
    if missing:
        raise ConfigError(f"{where}: the head needs a value for {', '.join(missing)} (its constructor has no default).")
    hints = _hints(cls.__init__)
    resolved = {}
    for key, default in params.items():
        if key not in given:
            resolved[key] = copy.deepcopy(default)
            continue
        value = _check_hint(given[key], hints.get(key), f"{where}.{key}")
        resolved[key] = value if default is empty else _check_type(value, default, f"{where}.{key}")
    return resolved


def _hints(fn) -> dict:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 (unresolvable annotations in a user's head: fall back to the defaults' types)
        return {}


def _check_hint(value, hint, where: str):
    """Check a value against a simple annotation (int, float, str, bool, X | None); others pass."""
    import types
    import typing

    if hint is None:
        return value
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where} must not be null.")
    simple = [a for a in args if a in (int, float, str, bool)]
    if not simple or len(simple) != len([a for a in args if a is not type(None)]):
        return value
    if isinstance(value, bool):
        if bool in simple:
            return value
    elif isinstance(value, int) and (int in simple or float in simple):
        return value
    elif isinstance(value, float) and float in simple:
        return _finite(value, where)
    elif isinstance(value, float) and int in simple and value.is_integer():
        return int(value)
    elif isinstance(value, str) and str in simple:
        return value
    names = " or ".join(a.__name__ for a in simple) + (" or null" if type(None) in args else "")
    raise ConfigError(f"{where} must be {'an' if names[0] in 'aeiou' else 'a'} {names}, got {value!r}.")


def _finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}; write a number such as 0.001.")
    return value


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
    cfg["train"] = merge_checked({**TRAIN_DEFAULTS, **ENCODER_DEFAULTS}, user.get("train") or {}, "train")
    _resolve_encoder(cfg["train"], user.get("train") or {})
    for section in ("heads", "suites"):
        value = user.get(section) or {}
        _check_keys(value, value, section)  # mapping check only; names are checked against registries
        cfg[section] = copy.deepcopy(value)
    if not 0 <= cfg["seed"] <= MAX_SEED:
        raise ConfigError(f"seed {cfg['seed']} is out of range; use an integer from 0 to {MAX_SEED}.")
    cfg["repeats"] = _check_type(user.get("repeats", cfg["repeats"]), 1, "repeats")
    if not 1 <= cfg["repeats"] <= MAX_REPEATS:
        raise ConfigError(
            f"repeats {cfg['repeats']} is out of range; use an integer from 1 to {MAX_REPEATS} "
            "(3 to 5 is usual: each repeat is a full run of every cell)."
        )
    t = cfg["train"]
    rules = [
        ("steps", t["steps"] >= 0, ">= 0"),
        ("batch_size", t["batch_size"] >= 2, ">= 2 (InfoNCE needs negatives)"),
        ("lr", t["lr"] > 0, "> 0"),
        ("weight_decay", t["weight_decay"] >= 0, ">= 0"),
        ("warmup_steps", t["warmup_steps"] >= 0, ">= 0"),
        ("grad_clip", t["grad_clip"] >= 0, ">= 0 (0 disables clipping)"),
        ("eval_points", t["eval_points"] >= 0, ">= 0 (0: no curve; more than steps: every step)"),
        ("patience", t["patience"] >= 0, ">= 0 (0: never stop early)"),
    ]
    for key, ok, allowed in rules:
        if not ok:
            raise ConfigError(
                f"train.{key} = {t[key]!r} is out of range: train needs {key} {allowed}. "
                f"The default is {TRAIN_DEFAULTS[key]!r}."
            )
    from bench.run.losses import LOSSES

    if t["patience"] and not t["eval_points"]:
        raise ConfigError(
            f"train.patience = {t['patience']} needs validation points to count: set train.eval_points > 0 "
            "or train.patience: 0."
        )
    if t["loss"] not in LOSSES:
        raise ConfigError(
            f"train.loss = {t['loss']!r} is not a loss.{suggest(t['loss'], LOSSES.names())} "
            f"Losses: {', '.join(LOSSES.names())} (bench/run/losses.py)."
        )
    return cfg


def _resolve_encoder(train: dict, given: dict) -> None:
    """Keep the encoder settings only when encoders train; refuse settings that would do nothing."""
    from bench.features.adapt import EncoderSpec

    spec = EncoderSpec.parse(train["encoder"])
    if spec.frozen:
        if "encoder_lr" in given:
            raise ConfigError(
                f"train.encoder_lr = {given['encoder_lr']!r} does nothing with train.encoder: frozen; remove it, "
                "or set train.encoder to last_blocks:N or all_blocks."
            )
        del train["encoder"], train["encoder_lr"]
        return
    if not train["encoder_lr"] > 0:
        raise ConfigError(
            f"train.encoder_lr = {train['encoder_lr']!r} is out of range: it must be > 0. "
            f"The default is {ENCODER_DEFAULTS['encoder_lr']!r}."
        )
    train["encoder"] = str(spec)


def encoder_spec(train: dict):
    """The resolved ``train.encoder`` (frozen when absent)."""
    from bench.features.adapt import EncoderSpec

    return EncoderSpec.parse(train.get("encoder", "frozen"))


def config_hash(obj: Any) -> str:
    """Stable hash of a JSON-able object (key order does not matter)."""
    return hashing.json_sha256(obj, 16, compact=True)


RUN_FLAGS = ("seed", "repeats")  # top-level keys a flag may set
SUITE_FLAGS = ("backbone", "data_root", "skip_corrupt")  # suite parameters a flag sets in every suite that has it


def with_flags(file_config: dict, flags: dict, suite_params: dict[str, dict], suite_arg: str) -> dict:
    """Layer 5 over layer 4: the --config file's content with the flags that were given (None: not given).

    ``suite_params`` maps each suite of the run to its parameters, so a suite flag goes to every suite
    that has the parameter; a flag no suite of the run has is an error, not silently dropped. ``suite_arg``
    is what the user named (a suite, or "all"), for messages."""
    from bench.data import default_root

    unknown = sorted(set(flags) - set(RUN_FLAGS) - set(SUITE_FLAGS))
    if unknown:
        raise ConfigError(f"unknown flag(s) {', '.join(unknown)}; flags that set config are {RUN_FLAGS + SUITE_FLAGS}.")
    user = copy.deepcopy(file_config)
    for key in RUN_FLAGS:
        if flags.get(key) is not None:
            user[key] = flags[key]
    for key in SUITE_FLAGS:
        value = flags.get(key)
        if value is None or value is False:
            continue
        takers = [name for name, params in suite_params.items() if key in params]
        if not takers:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to suite {suite_arg!r} (it has no {key!r} parameter).")
        suites = user.setdefault("suites", {})
        if not isinstance(suites, dict):
            raise ConfigError(f"suites must be a mapping, got {type(suites).__name__}: {suites!r}.")
        if key == "data_root":
            value = str(default_root(value))
        for name in takers:
            section = suites.get(name) or {}
            suites[name] = {**section, key: value}
    return user

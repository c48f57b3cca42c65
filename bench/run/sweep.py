"""Grids of configs for ``run_bench.py sweep``: parse ``KEY=V1,V2`` specs, expand them, name the points.

A sweep point is an ordinary run with a few config keys set; it is validated, keyed, reused and
written exactly like one (each point in a folder of its own), so a sweep can report nothing that
the same run would not. The report (tables, figures) is bench/report/sweep.py.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass

import yaml

from bench.core.errors import ConfigError
from bench.run import config

MAX_POINTS = 400  # a grid bigger than this is almost surely a typo (each point is a full run of every head)


@dataclass(frozen=True)
class Axis:
    key: str  # dotted config path, e.g. "heads.*.out_dim" or "suites.synthetic.topics"
    values: tuple

    @property
    def label(self) -> str:
        return self.key.split(".")[-1]


def parse_axis(spec: str) -> Axis:
    """``heads.*.out_dim=2,4,8``: each value read as YAML (so 2 is an int, 0.5 a float, null None)."""
    if "=" not in spec:
        raise ConfigError(
            f"--grid {spec!r}: write KEY=V1,V2,... such as heads.*.out_dim=2,4,8 or suites.synthetic.topics=4,8,16."
        )
    key, _, raw = spec.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts) or not re.fullmatch(r"[A-Za-z0-9_.*@-]+", key):
        raise ConfigError(
            f"--grid {spec!r}: {key!r} is not a dotted config key (e.g. train.steps, heads.cosine.out_dim)."
        )
    if parts[0] in ("heads", "suites") and len(parts) < 3:
        raise ConfigError(
            f"--grid {spec!r}: name the {parts[0][:-1]} and its option, e.g. {parts[0]}.NAME.OPTION"
            + (" (heads.*.OPTION: every head that has it)." if parts[0] == "heads" else ".")
        )
    if parts[0] == "repeats":
        raise ConfigError(f"--grid {spec!r}: repeats is not a grid axis; pass --repeats N (every point runs N times).")
    try:
        values = tuple(yaml.safe_load(v.strip()) for v in raw.split(","))
    except yaml.YAMLError:
        raise ConfigError(
            f"--grid {spec!r}: the values must be comma-separated numbers, words, true/false or null."
        ) from None
    if not raw.strip() or any(isinstance(v, (dict, list)) for v in values) or "" in [v.strip() for v in raw.split(",")]:
        raise ConfigError(f"--grid {spec!r}: give one or more comma-separated values after '=', e.g. {key}=2,4,8.")
    same = [_same_value(v) for v in values]  # 2 and 2.0 are one point: the run would be the same
    if len(set(same)) != len(same):
        twice = next(v for v, k in zip(values, same) if same.count(k) > 1)
        raise ConfigError(f"--grid {spec!r}: the value {twice!r} is listed twice (2 and 2.0 are the same value).")
    return Axis(key, values)


def _same_value(v) -> tuple:
    """What makes two values the same run: 2, 2.0 and "2e0" (YAML leaves 1e-3 as text) are one number."""
    if isinstance(v, str):
        v = config.yaml_number(v, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return ("number", float(v))
    return (type(v).__name__, repr(v))


def parse_grid(specs: list[str]) -> list[Axis]:
    if not specs:
        raise ConfigError("sweep needs at least one --grid KEY=V1,V2,... (e.g. --grid heads.*.out_dim=2,4,8,16).")
    axes = [parse_axis(s) for s in specs]
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(
            f"--grid names {sorted(k for k in keys if keys.count(k) > 1)[0]!r} twice; give each key once."
        )
    n = 1
    for a in axes:
        n *= len(a.values)
    if n > MAX_POINTS:
        raise ConfigError(
            f"the grid has {n} points (more than {MAX_POINTS}); each is a full run of every head. "
            "Sweep fewer values, or run several smaller sweeps."
        )
    return axes


def points(axes: list[Axis]) -> list[dict[str, object]]:
    """Every combination, the first axis varying slowest: ``{key: value}`` per point."""
    return [dict(zip([a.key for a in axes], combo)) for combo in itertools.product(*[a.values for a in axes])]


def apply(user: dict, point: dict[str, object]) -> dict:
    """A copy of the user's config with the point's keys set (missing sections are created)."""
    out = copy.deepcopy(user)
    for key, value in point.items():
        *path, last = key.split(".")
        node = out
        for i, part in enumerate(path):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--grid {key}: {'.'.join(path[: i + 1])} is {child!r} in the config, not a section.")
            node = child
        node[last] = value
    return out


def point_name(axes: list[Axis], point: dict[str, object], index: int) -> str:
    """A folder name that sorts in grid order and says what the point is: ``03-out_dim=8-topics=16``."""
    labels = [a.label for a in axes]
    use = [a.label if labels.count(a.label) == 1 else a.key for a in axes]
    text = "-".join(f"{u}={point[a.key]}" for u, a in zip(use, axes))
    return f"{index:03d}-" + re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)[:150]


def ran_as_labelled(axes: list[Axis], point: dict[str, object], cfg: dict, cells: list) -> None:
    """Refuse a point whose planned run does not use the values its label states: e.g. ``heads.*.out_dim=2``
    while the shared config sets ``heads.cosine.out_dim: 8`` (a head's own section wins), which labelled a
    row 2 that ran at 8. ``cfg``: the point's resolved config; ``cells``: its planned cells."""
    for a in axes:
        parts, want = a.key.split("."), point[a.key]
        if parts[0] == "heads":
            for cell in cells:
                applies = parts[1] in ("*", cell.head) and parts[2] in cell.options
                got = cell.options.get(parts[2])
                if applies and _same_value(got) != _same_value(want):
                    section = f"heads.{cell.head}.{parts[2]}"
                    raise ConfigError(
                        f"--grid {a.key}={want}: {cell.head} would run with {parts[2]} = {got!r}, because the config "
                        f"sets {section} (a head's own section wins over heads.*); the table would label it "
                        f"{want!r}. Remove {section} from the config, or sweep it by name (--grid {section}=...)."
                    )
            continue
        node = cfg
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        if _same_value(node) != _same_value(want):
            raise ConfigError(
                f"--grid {a.key}={want}: the planned run uses {a.key} = {node!r}, so the point would be labelled "
                "with a value it did not run; remove the setting that overrides it."
            )

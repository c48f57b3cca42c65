"""Benchmark suites. Add one: a module with a ``@register_suite`` class, listed below."""

from __future__ import annotations

import importlib

from suites.base import (
    SUITES,
    PointSets,
    Suite,
    SuiteData,
    get_suite,
    list_suites,
    register_suite,
)

# The one place that decides which suites ship with the package.
BUILTIN_MODULES = (
    "suites.synthetic",
    "suites.retrieval",
    "suites.classification",
    "suites.linear_probe",
    "suites.compositionality",
)

for _module in BUILTIN_MODULES:
    importlib.import_module(_module)

__all__ = ["SUITES", "PointSets", "Suite", "SuiteData", "get_suite", "list_suites", "register_suite"]

"""A head whose scores carry no ranking: constant, or tied at the top for most queries.

A collapsed head (every candidate scored the same) is not "bad", it is chance presented as a number:
its recall depends only on how ties are counted, and a chance-level recall can beat a weak head that
ranks. So the runner marks such a cell ``degenerate`` (with the reason) and boards, ``compare`` and the
plots never call it best. The test is read from the per-query rank outcomes alone (for every ranking
query: how many negatives tie with its best positive), so it needs no suite code and no rerun.
"""

from __future__ import annotations

import numpy as np

TIED_SHARE = 0.5  # more than this share of a ranking's queries tie their best positive with a negative


def check(outcomes: dict | None, spec: dict | None) -> str | None:
    """The reason a cell is degenerate, or None. ``outcomes``/``spec``: as written beside the result."""
    if not outcomes or not spec:
        return None
    prefixes = sorted({s["query"] for s in spec.values() if s.get("kind") in ("hit", "balanced_hit")})
    found = []
    for prefix in prefixes:
        tied = np.asarray(outcomes.get(f"{prefix}/tied_neg", []))
        if tied.size and float(np.mean(tied > 0)) > TIED_SHARE:
            found.append(f"{prefix} ({np.mean(tied > 0):.0%} of {tied.size} queries)")
    if not found:
        return None
    return (
        "its scores tie the best positive with a negative for most queries of "
        + ", ".join(found)
        + ": constant or collapsed scores, whose recall is chance; never ranked as best"
    )

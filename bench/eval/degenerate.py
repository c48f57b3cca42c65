"""A head whose scores carry no ranking: constant, or collapsed into ties for most queries.

A collapsed head (every candidate scored the same) is not "bad", it is chance presented as a number:
its recall depends only on how ties are counted, and a chance-level recall can beat a weak head that
ranks. So the runner marks such a cell ``degenerate`` (with the reason) and boards, ``compare`` and the
plots never call it best. The test is read from the per-query rank outcomes alone (for every ranking
query: how many negatives tie with its best positive), so it needs no suite code and no rerun.
"""

from __future__ import annotations

import numpy as np

TIED_SHARE = 0.5  # more than this share of a ranking's queries ...
TIED_WITH = 0.5  # ... tie their best positive with at least this share of their negatives


def check(outcomes: dict | None, spec: dict | None) -> str | None:
    """The reason a cell is degenerate, or None. ``outcomes``/``spec``: as written beside the result.

    A query is collapsed when its best positive ties with at least half of its negatives (constant
    scores tie it with all of them). A few exact ties are not a collapse: a head whose scores saturate
    on shared points (FILIP's max over tokens in a topic world) still ranks, and ties get their
    expected share of a hit. Outcomes without ``n_candidates`` (written before it was recorded) are
    not judged."""
    if not outcomes or not spec:
        return None
    # a ranking's prefix; a metric that is not a ranking may name the comparisons it made (``ties``)
    prefixes = sorted(
        {s["query"] for s in spec.values() if s.get("kind") in ("hit", "balanced_hit")}
        | {s["ties"] for s in spec.values() if s.get("ties")}
    )
    found = []
    for prefix in prefixes:
        tied = np.asarray(outcomes.get(f"{prefix}/tied_neg", []))
        n = outcomes.get(f"{prefix}/n_candidates")
        if not tied.size or n is None:
            continue
        negatives = max(int(np.asarray(n)) - 1, 1)
        collapsed = tied >= TIED_WITH * negatives
        if float(np.mean(collapsed)) > TIED_SHARE:
            found.append(f"{prefix} ({np.mean(collapsed):.0%} of {tied.size} queries)")
    if not found:
        return None
    return (
        "its best positive ties with at least half of the negatives for most queries of "
        + ", ".join(found)
        + ": constant or collapsed scores, whose ranking is chance; never ranked as best"
    )

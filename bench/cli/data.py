"""``run_bench.py data [--data-root DIR]`` (also ``--check-data``): which datasets are ready, and the layout
and source of the rest. Exit 1 if any is not ready."""

from __future__ import annotations

import argparse

from bench.cli.common import EXIT_FAILED, EXIT_OK, add_output_flags
from bench.data import default_root


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-root",
        default=None,
        help="datasets folder (default: $SIMBENCH_DATA, else ./data), one folder per dataset",
    )
    add_output_flags(p)


def command(args) -> int:
    return check_data(args.data_root)


def training_rows(root) -> list[dict]:
    """The training pairs the real-data suites read by default (every head trains on them before it is
    scored): a test split that is ready is not enough for a run."""
    import suites
    from bench.data import retrieval_data
    from suites.backbone_suite import BackboneSuite

    needs: dict[tuple[str, str], list[str]] = {}
    for name in suites.list_suites():
        cls = suites.get_suite(name)
        if issubclass(cls, BackboneSuite):
            d = cls.default_params()
            needs.setdefault((str(d["train_dataset"]), str(d["train_split"])), []).append(name)
    rows = []
    for (dataset, split), users in sorted(needs.items()):
        row = {"task": "training", "dataset": dataset}
        try:
            ds = retrieval_data.load(root, dataset, split)
            rows.append(
                {**row, "ready": True, "detail": f"{len(ds.captions)} pairs ({split} split), for {', '.join(users)}"}
            )
        except retrieval_data.DataError as exc:
            info = retrieval_data.DATASETS.get(dataset)
            rows.append(
                {
                    **row,
                    "ready": False,
                    "detail": f"the {split} split every head of {', '.join(users)} trains on: {exc}",
                    "layout": info.layout.strip("\n") if info else "see docs/usage.md",
                    "source": info.source if info else "",
                }
            )
    return rows


def check_data(data_root: str | None) -> int:
    """Which datasets are ready: a short table, then for each missing one its problem, layout and
    source, wrapped to 100 columns."""
    import textwrap

    from bench.data import classification_data, probe_data, retrieval_data, selection_data

    root = default_root(data_root)
    rows = training_rows(root)
    rows += [{"task": "retrieval", **r} for r in retrieval_data.check_all(root)]
    rows += [{"task": "linear_probe", **r} for r in probe_data.check_all(root)]
    rows += [{"task": "compositional", **r} for r in selection_data.check_all(root)]
    for name, (layout, source) in classification_data.LAYOUTS.items():
        try:
            ds = classification_data.load(root, name)
            rows.append(
                {
                    "task": "classification",
                    "dataset": name,
                    "ready": True,
                    "detail": f"{len(ds.image_paths)} images, {len(ds.classnames)} classes",
                }
            )
        except classification_data.DataError as exc:
            rows.append(
                {
                    "task": "classification",
                    "dataset": name,
                    "ready": False,
                    "detail": str(exc),
                    "layout": layout,
                    "source": source,
                }
            )
    lines = [f"data root: {root.resolve()}", "", f"{'task':<15} {'dataset':<23} {'ready':<6} detail"]
    for r in rows:
        detail = r["detail"] if r["ready"] else "missing or incomplete (below)"
        lines.append(f"{r['task']:<15} {r['dataset']:<23} {'yes' if r['ready'] else 'no':<6} {detail}"[:100])
    missing = [r for r in rows if not r["ready"]]
    if missing:
        lines += ["", "What is missing, the layout expected and where to get it:"]

    def block(label: str, text: str) -> list[str]:
        out = []
        for i, para in enumerate(str(text).strip("\n").splitlines()):
            first = f"  {label:<8} " if i == 0 else " " * 11
            out += textwrap.wrap(
                para.strip(),
                100,
                initial_indent=first,
                subsequent_indent=" " * 13,
                break_long_words=True,  # a path longer than a line is cut, not left past column 100
                break_on_hyphens=False,
            ) or [first]
        return out

    for r in missing:
        problem = r["detail"].split(" Expected layout")[0].splitlines()[0]
        lines += [
            "",
            f"{r['dataset']} ({r['task']})",
            *block("problem", problem),
            *block("layout", r["layout"]),
            *block("source", r["source"]),
        ]
    print("\n".join(lines))
    return EXIT_OK if all(r["ready"] for r in rows) else EXIT_FAILED

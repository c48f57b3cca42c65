"""``run_bench.py list heads|suites`` (also ``--list-heads``, ``--list-suites``): what is registered, with
every option and its default."""

from __future__ import annotations

import argparse

from bench.cli.common import EXIT_OK, add_head_flags, add_output_flags, import_head_module


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("heads", "suites"), help="what to list")
    add_head_flags(p)
    add_output_flags(p)


def command(args) -> int:
    for spec in args.head_module:
        import_head_module(spec)
    print(listing(args.kind))
    return EXIT_OK


def listing(kind: str) -> str:
    import pandas as pd

    if kind == "heads":
        import textwrap

        import heads
        from bench.core.errors import ConfigError
        from bench.run import config

        lines = [
            "Heads (set options under heads.NAME in --config; every option below is recorded in each result).",
            "Readout: layers = the pooled token at the last L blocks; tokens = every token of the last block.",
        ]
        for n in heads.list_heads():
            c = heads.get_head(n)
            try:
                opts = config.head_options(c, {}, f"heads.{n}")
                shown = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in opts.items())
            except ConfigError as exc:
                shown = str(exc)
            scores = "direction-specific scores" if c.directional_scores() else "one score for both directions"
            lines += [
                "",
                f"{n} (v{c.version}, {'trainable' if c.trainable else 'trains nothing'}, readout: {c.readout}, "
                f"{scores})",
            ]
            lines += textwrap.wrap(c.description, 100, initial_indent="  ", subsequent_indent="  ")
            lines += textwrap.wrap(f"options: {shown or 'none'}", 100, initial_indent="  ", subsequent_indent="    ")
        return "\n".join(lines)
    else:
        import suites

        rows = [
            {"suite": n, "version": c.version, "main metric": c.main_metric, "description": c.description}
            for n in suites.list_suites()
            for c in [suites.get_suite(n)]
        ]
    return pd.DataFrame(rows).to_markdown(index=False)

"""Learning curves: one figure per suite, the validation metric of every trained head against the step,
from the ``curve`` each result file records (repeats drawn faint beside repeat 0)."""

from __future__ import annotations

from pathlib import Path

from bench.core import atomic
from bench.core.records import ResultRecord


def curves_path(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / f"curves-{suite}.png"


def build_curves(rs: list[ResultRecord], path: Path) -> bool:
    """Write the figure; False (and no file) when no record of the suite has a curve."""
    with_curve = [r for r in rs if r.status == "ok" and r.curve]
    if not with_curve:
        Path(path).unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conv = with_curve[0].convergence or {}
    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    heads = sorted({r.head.name for r in with_curve})
    colours = {h: plt.get_cmap("tab10")(i % 10) for i, h in enumerate(heads)}
    for r in sorted(with_curve, key=lambda r: (r.head.name, r.repeat)):
        steps = [p["step"] for p in r.curve]
        first = r.repeat == min(x.repeat for x in with_curve if x.head.name == r.head.name)
        style = {"color": colours[r.head.name], "alpha": 1.0 if first else 0.35, "lw": 1.4 if first else 0.8}
        label = r.head.name + (" (NOT CONVERGED)" if r.not_converged else "") if first else None
        ax_val.plot(steps, [p["val"] for p in r.curve], label=label, **style)
        ax_loss.plot(steps, [p["train_loss"] for p in r.curve], **style)
        best = (r.convergence or {}).get("best_step")
        if best is not None and first:
            ax_val.plot(
                [best], [next(p["val"] for p in r.curve if p["step"] == best)], "o", color=colours[r.head.name], ms=4
            )
    direction = "higher" if conv.get("higher_is_better") else "lower"
    ax_val.set_title(
        f"{conv.get('metric', 'validation metric')} ({direction} is better; dot: weights kept)", fontsize=9
    )
    ax_val.set_xlabel("step")
    if not conv.get("higher_is_better", True):
        ax_val.set_yscale("symlog", linthresh=0.01)
    ax_loss.set_yscale("log")
    ax_loss.set_title("training loss (mean since the previous point)", fontsize=9)
    ax_loss.set_xlabel("step")
    ax_val.legend(fontsize=7)
    fig.suptitle(f"{with_curve[0].suite.name}: learning curves (faint: other repeats)", fontsize=10)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True

"""A training run's logged history: the metrics CSV it writes, read back, and drawn as a loss
curve. No Lightning here, so reports that read a model's history stay light; matplotlib loads
only when a figure is drawn."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

METRICS_CSV = "logs/metrics.csv"  # in the run folder and in the model artifact


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """The run's logged records as a CSV: `step`, then every metric, a row per record."""
    columns = ["step", *sorted({k for r in history for k in r} - {"step"})]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        for record in history:
            writer.writerow({**record, "step": int(record["step"])})


def read_history(path: Path) -> list[dict[str, float]]:
    """metrics.csv as rows holding the columns each row filled."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


def plot_pretraining_losses(ax: Any, history: list[dict[str, float]]) -> None:
    """Train loss, train MLM loss and validation MLM loss against the step, on `ax`."""
    for key, label in (
        ("train/loss", "train loss (MLM + NSP)"),
        ("train/mlm_loss", "train MLM"),
        ("val/mlm_loss", "validation MLM"),
    ):
        points = [(r["step"], r[key]) for r in history if key in r and math.isfinite(r[key])]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if key.startswith("val") else None, label=label)


def plot_losses(history: list[dict[str, float]], out: Path, title: str) -> None:
    """Training and validation loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    plot_pretraining_losses(ax, history)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)

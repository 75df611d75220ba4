"""What people read of an evaluation: the markdown report (lineage, intrinsic metrics, the
downstream table beside its baselines), the comparison with the previous evaluation of the same
task set, the side-by-side table of several evaluations, and the curves PNG.

Everything here reads manifests and stats; nothing trains or evaluates. Only the curves need
matplotlib, so they import it when they run: showing and comparing evaluations from the command
line stays light.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertflow.model.evaluation.metrics import HIGHER_IS_BETTER
from bertflow.model.metric_format import INTRINSIC, fmt
from bertflow.model.training.history import plot_pretraining_losses, read_history
from bertflow.pipeline.core.lineage import lineage
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.markdown import markdown_table
from bertflow.pipeline.core.store import ArtifactStore

TRAINING_FIELDS = (
    "preset",
    "max_steps",
    "batch_size",
    "accumulate",
    "lr",
    "schedule",
    "warmup_steps",
    "precision",
    "seed",
)
BASELINE_LABELS = {"tfidf": "TF-IDF", "random-init": "random init"}


def spread(summary: dict[str, Any]) -> str:
    """`median (min–max), mean ± std` over the runs, or the value alone for a single run."""
    if len(summary["runs"]) == 1:
        return fmt(summary["median"])
    # Evaluations made before the mean was stored have their runs, which give it.
    mean = summary.get("mean", float(np.mean(summary["runs"])))
    return (
        f"{fmt(summary['median'])} ({fmt(summary['min'])}–{fmt(summary['max'])}), "
        f"{fmt(mean)} ± {fmt(summary['std'])}"
    )


# -- the report -------------------------------------------------------------------------------


def code(artifact_id: str) -> str:
    """An artifact id as the report.md file shows it."""
    return f"`{artifact_id}`"


def render_report(
    store: ArtifactStore,
    model: Manifest,
    config: dict[str, Any],
    stats: dict[str, Any],
    link: Callable[[str], str] = code,
) -> str:
    """The evaluation's markdown: lineage, training recipe, intrinsic and downstream tables.
    `link` writes an artifact id (in the Prefect UI, a link to that artifact's page)."""
    lines = [f"# Evaluation of {link(model.id)}", ""]
    lines += lineage_section(store, model, link)
    lines += intrinsic_section(stats.get("intrinsic", {}))
    lines += downstream_section(stats.get("tasks", {}), config, stats.get("lr"))
    if stats.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in stats["warnings"]] + [""]
    return "\n".join(lines)


def lineage_section(
    store: ArtifactStore, model: Manifest, link: Callable[[str], str] = code
) -> list[str]:
    lines = ["## Lineage", ""]
    shown: set[str] = set()

    def walk(node: dict[str, Any], depth: int) -> None:
        indent = "  " * depth
        role = f"{node['role']}: " if node.get("role") else ""
        if node.get("missing") or node["id"] in shown:
            why = "missing from the store" if node.get("missing") else "above"
            if "problem" in node:
                why = f"cannot be read: {node['problem']}"
            lines.append(f"{indent}- {role}{link(node['id'])} ({why})")
            return
        shown.add(node["id"])
        lines.append(f"{indent}- {role}**{node['kind']}** {link(node['id'])} — {node['summary']}")
        for up in node["upstream"]:
            walk(up, depth + 1)
        if node["inputs"]:
            lines.append(f"{indent}  - raw inputs: {len(node['inputs'])} files")

    walk(lineage(store, model.id), 0)
    recipe = ", ".join(
        f"{k} {model.config[k]}" for k in TRAINING_FIELDS if model.config.get(k) is not None
    )
    s = model.stats
    lines += [
        "",
        f"Training: {recipe}; world size {s.get('world_size')}, global batch "
        f"{s.get('global_batch')}, {s.get('device')}.",
        "",
    ]
    return lines


def intrinsic_section(intrinsic: dict[str, Any]) -> list[str]:
    lines = ["## Intrinsic (validation shards, fixed 15% masks)", ""]
    if "mlm_loss" not in intrinsic:
        why = intrinsic.get("not_measured", "switched off")
        return lines + [f"Not measured: {why}.", ""]
    lines += ["| metric | value |", "|---|---:|"]
    for key, label, _ in INTRINSIC:
        if key in intrinsic:
            lines.append(f"| {label} | {fmt(intrinsic[key], key)} |")
    lines.append(f"| examples | {fmt(intrinsic.get('examples'), 'examples')} |")
    return lines + [""]


def downstream_section(
    tasks: dict[str, Any], config: dict[str, Any], lr: float | None
) -> list[str]:
    lines = ["## Downstream (fine-tuned)", ""]
    if not tasks:
        return lines + ["No tasks given.", ""]
    head, rows = downstream_table(tasks, config)
    lines += [*markdown_table(head, rows, text_columns=3), "", *selection_lines(tasks)]
    recipe = {**config, "lr": lr}
    lines += [
        "Fine-tuning: "
        + ", ".join(
            f"{k} {recipe.get(k)}"
            for k in ("epochs", "lr", "batch_size", "pooling", "max_train_examples", "dev_fraction")
            if recipe.get(k) is not None
        )
        + "; examples per split, truncation and every run's dev scores per epoch in "
        "`results.json`.",
        "",
    ]
    return lines


def downstream_table(
    tasks: dict[str, Any], config: dict[str, Any]
) -> tuple[list[str], list[list[str]]]:
    """(header, rows): each task metric, the model's median, range, mean and standard deviation
    over its seeds beside the baselines."""
    baselines = list(config.get("baselines", []))
    head = ["task", "split", "metric", "seeds", "pretrained: median (min–max), mean ± std"]
    head += [BASELINE_LABELS.get(b, b) for b in baselines] + ["vs best baseline"]
    rows = []
    for name, task in tasks.items():
        split = f"{task['evaluation_split']} ({task['examples']['evaluation']:,})"
        for metric in task["metrics"]:
            model = task["model"][metric]
            refs = [task["baselines"][b][metric]["median"] for b in baselines]
            cells = [name, split, metric, str(len(model["runs"])), spread(model)]
            cells += [spread(task["baselines"][b][metric]) for b in baselines]
            cells.append(_versus(model["median"], refs, metric))
            rows.append(cells)
    return head, rows


def selection_lines(tasks: dict[str, Any]) -> list[str]:
    """How each task's runs chose their epoch, and the epoch each kept."""
    lines = []
    for name, task in tasks.items():
        selection = task.get("selection")
        if selection is None:  # evaluations from before model selection kept the last epoch
            continue
        dev = task.get("dev")
        how = (
            f"the best dev {task['primary']} on {dev['examples']:,} training examples held "
            f"out (the {task['evaluation_split']} split chose nothing)"
            if dev
            else "the last epoch (no dev split)"
        )
        kept = "; ".join(
            f"{BASELINE_LABELS.get(label, label)} {', '.join(map(str, epochs))}"
            for label, epochs in selection["epochs"].items()
        )
        lines.append(f"- {name}: each run kept the epoch with {how}. Epochs kept: {kept}.")
    return [*lines, ""] if lines else []


def _versus(value: float, references: list[float], metric: str) -> str:
    if not references:
        return "—"
    better = HIGHER_IS_BETTER.get(metric, True)
    best = max(references) if better else min(references)
    return f"{value - best:+.4f}"


# -- comparisons ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """One headline number of an evaluation, to compare and to show."""

    value: float  # what comparisons compare: an intrinsic value, or a median over seeds
    higher_is_better: bool
    cell: str  # what tables show: a task metric's median with its range, mean and std


def headline_metrics(manifest: Manifest) -> dict[str, Headline]:
    """`label -> Headline`: intrinsic metrics and each task metric of the pretrained model."""
    out: dict[str, Headline] = {}
    intrinsic = manifest.stats.get("intrinsic", {})
    for key, label, higher in INTRINSIC:
        if key in intrinsic:
            value = float(intrinsic[key])
            out[f"intrinsic {label}"] = Headline(value, higher, fmt(value, key))
    for name, task in manifest.stats.get("tasks", {}).items():
        for metric in task["metrics"]:
            summary = task["model"][metric]
            higher = HIGHER_IS_BETTER.get(metric, True)
            out[f"{name} {metric}"] = Headline(float(summary["median"]), higher, spread(summary))
    return out


def previous_evaluation(store: ArtifactStore, manifest: Manifest) -> Manifest | None:
    """The latest other evaluation of the same task set made before this one."""
    key = manifest.layout.get("task_set")
    earlier = [
        m
        for m in store.list("evaluation")
        if m.id != manifest.id
        and m.layout.get("task_set") == key
        and (m.created, m.id) < (manifest.created, manifest.id)
    ]
    return earlier[-1] if earlier else None


@dataclass(frozen=True)
class Change:
    metric: str
    before: float
    after: float
    higher_is_better: bool

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def verdict(self) -> str:
        if abs(self.delta) < 1e-9:
            return "unchanged"
        improved = (self.delta > 0) == self.higher_is_better
        return ("rose" if self.delta > 0 else "fell") + (" (better)" if improved else " (worse)")


def changes(previous: Manifest, current: Manifest) -> list[Change]:
    before, after = headline_metrics(previous), headline_metrics(current)
    return [
        Change(metric, before[metric].value, h.value, h.higher_is_better)
        for metric, h in after.items()
        if metric in before
    ]


def comparison_markdown(previous: Manifest | None, current: Manifest) -> str:
    lines = ["## Compared with the previous evaluation of these tasks", ""]
    if previous is None:
        return "\n".join(lines + ["This is the first evaluation of this task set in the store."])
    lines += [
        f"Previous: `{previous.id}` of model `{previous.upstream.get('model')}`, made "
        f"{previous.created}.",
        "",
        "| metric | before | after | change | |",
        "|---|---:|---:|---:|---|",
    ]
    before, after = headline_metrics(previous), headline_metrics(current)
    for c in changes(previous, current):
        lines.append(
            f"| {c.metric} | {before[c.metric].cell} | {after[c.metric].cell} | "
            f"{c.delta:+.4f} | {c.verdict} |"
        )
    return "\n".join(lines)


def comparison_table(manifests: list[Manifest]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of several evaluations side by side: one row per metric, one column each
    (a task metric's median, with its range, mean and standard deviation over seeds)."""
    metrics = [headline_metrics(m) for m in manifests]
    names: list[str] = []
    for per in metrics:
        names += [k for k in per if k not in names]
    header = ["metric"] + [m.id for m in manifests]
    rows = [["model"] + [str(m.upstream.get("model")) for m in manifests]]
    for name in names:
        rows.append([name] + [per[name].cell if name in per else "—" for per in metrics])
    return header, rows


def render_text_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """Aligned columns for a terminal: the first `text_columns` to the left, numbers right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def metric_rows(stats: dict[str, Any]) -> list[dict[str, str]]:
    """Every number as table rows (the Prefect table artifact): the pretrained model's median
    with the mean, standard deviation and range over its seeds, beside the baselines."""
    rows = []
    intrinsic = stats.get("intrinsic", {})
    for key, label, _ in INTRINSIC:
        if key in intrinsic:
            rows.append(
                {
                    "task": "intrinsic",
                    "split": "validation shards",
                    "metric": label,
                    "seeds": "",
                    "pretrained": fmt(intrinsic[key], key),
                    "mean": "",
                    "std": "",
                    "min": "",
                    "max": "",
                    "baselines": "",
                }
            )
    for name, task in stats.get("tasks", {}).items():
        for metric in task["metrics"]:
            m = task["model"][metric]
            refs = "; ".join(
                f"{BASELINE_LABELS.get(b, b)} {spread(v[metric])}"
                for b, v in task["baselines"].items()
            )
            rows.append(
                {
                    "task": name,
                    "split": task["evaluation_split"],
                    "metric": metric,
                    "seeds": str(len(m["runs"])),
                    "pretrained": fmt(m["median"]),
                    "mean": fmt(m.get("mean", float(np.mean(m["runs"])))),
                    "std": fmt(m["std"]),
                    "min": fmt(m["min"]),
                    "max": fmt(m["max"]),
                    "baselines": refs,
                }
            )
    return rows


# -- curves -----------------------------------------------------------------------------------


def plot_curves(
    store: ArtifactStore,
    model: Manifest,
    curves: dict[str, dict[str, list[list[tuple[int, float]]]]],
    epoch_scores: dict[str, dict[str, list[list[float]]]],
    primary: dict[str, str],
    out: Path,
    title: str,
) -> None:
    """Left: the model's pretraining curves (train loss, validation MLM loss). Middle: the
    fine-tuning training loss of each task's first seed, pretrained and random-init. Right:
    each task's primary metric on its dev split after every epoch (median over seeds), the curve
    each run chose its epoch by (the evaluation split's, where a task had no dev split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = _model_history(store, model)
    fig, (left, right, scores) = plt.subplots(1, 3, figsize=(15, 4), dpi=110)
    plot_pretraining_losses(left, history)
    left.set(title="pretraining", xlabel="step", ylabel="loss")
    for task, by_label in curves.items():
        for label, runs in by_label.items():
            if runs and runs[0]:
                xs, ys = zip(*runs[0], strict=True)
                right.plot(
                    xs,
                    ys,
                    linestyle="-" if label == "pretrained" else "--",
                    label=f"{task} ({label})",
                )
    right.set(title="fine-tuning (first seed)", xlabel="step", ylabel="training loss")
    for task, by_label in epoch_scores.items():
        for label, runs in by_label.items():
            if runs and runs[0]:
                medians = [float(v) for v in np.median(np.asarray(runs), axis=0)]
                scores.plot(
                    range(1, len(medians) + 1),
                    medians,
                    marker="o",
                    linestyle="-" if label == "pretrained" else "--",
                    label=f"{task} {primary[task]} ({label})",
                )
    scores.set(
        title="dev split after each epoch (evaluation split if none)",
        xlabel="epoch",
        ylabel="metric (median over seeds)",
    )
    for ax in (left, right, scores):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)


def _model_history(store: ArtifactStore, model: Manifest) -> list[dict[str, float]]:
    logs = model.layout.get("logs", "logs")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.csv"
        try:
            with store.open(model.id, f"{logs}/metrics.csv") as f:
                path.write_bytes(f.read())
        except FileNotFoundError:
            return []
        return read_history(path)

"""What an evaluation adds to a model's card: the section with its scores beside the baselines,
and the Hub's `model-index` results. `bertflow export` renders the card with the latest
evaluation of the model in the store (a later artifact than the model's own `hf/README.md`)."""

from __future__ import annotations

from typing import Any

from bertflow.model.evaluation.report import downstream_table, selection_lines
from bertflow.model.metric_format import INTRINSIC, fmt
from bertflow.model.model_card import CardEvaluation
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.markdown import markdown_table
from bertflow.pipeline.core.store import ArtifactStore


def card_evaluation(evaluation: Manifest) -> CardEvaluation:
    return CardEvaluation(_section(evaluation), _index_results(evaluation))


def latest_evaluation(store: ArtifactStore, model_id: str) -> Manifest | None:
    """The most recent evaluation artifact of `model_id` in the store, if any."""
    evaluations = [m for m in store.list("evaluation") if m.upstream.get("model") == model_id]
    return evaluations[-1] if evaluations else None


def _index_results(evaluation: Manifest) -> list[dict[str, Any]]:
    """model-index results: each task's metrics (medians over seeds) and the intrinsic ones."""
    results = []
    for name, task in evaluation.stats.get("tasks", {}).items():
        kind = "Regression" if task["problem"] == "regression" else "Text Classification"
        metrics = []
        for metric in task["metrics"]:
            summary = task["model"][metric]
            runs = len(summary["runs"])
            label = metric if runs == 1 else f"{metric} (median of {runs} seeds)"
            metrics.append({"type": metric, "value": summary["median"], "name": label})
        results.append(
            {
                "task": {"type": "text-classification", "name": kind},
                "dataset": {"name": name, "type": name, "split": task["evaluation_split"]},
                "metrics": metrics,
            }
        )
    intrinsic, shards = evaluation.stats.get("intrinsic", {}), evaluation.layout.get("shards")
    measured = [(key, label) for key, label, _ in INTRINSIC if key in intrinsic]
    if measured and shards:
        results.append(
            {
                "task": {"type": "fill-mask", "name": "Masked language modelling"},
                "dataset": {"name": f"{shards} validation", "type": shards, "split": "validation"},
                "metrics": [
                    {"type": key, "value": intrinsic[key], "name": label} for key, label in measured
                ],
            }
        )
    return results


def _section(evaluation: Manifest) -> list[str]:
    lines = ["## Evaluation", ""]
    lines += [
        f"From `{evaluation.id}` ({evaluation.created}), the latest evaluation of this "
        "model in the store.",
        "",
    ]
    intrinsic = evaluation.stats.get("intrinsic", {})
    rows = [[label, fmt(intrinsic[key], key)] for key, label, _ in INTRINSIC if key in intrinsic]
    if rows:
        lines += ["Intrinsic, on the validation shards at fixed 15% masks:", ""]
        lines += [*markdown_table(["metric", "value"], rows), ""]
    tasks = evaluation.stats.get("tasks", {})
    if tasks:
        head, rows = downstream_table(tasks, evaluation.config)
        lines += ["Fine-tuned on downstream tasks, beside the baselines on the same split:", ""]
        lines += [*markdown_table(head, rows, text_columns=3), "", *selection_lines(tasks)]
    return lines

"""The evaluate flow: model -> evaluation artifact, cached by content.

Besides the records every stage leaves, it publishes a table of every metric (`<id>-metrics`)
and a markdown report with the model's lineage, the downstream table beside its baselines and
the comparison with the previous evaluation of the same task set. The comparison is made when the
flow runs (it depends on what else is in the store), so it lives in Prefect, not in the artifact.
"""

from __future__ import annotations

import functools

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from bertflow.flows.records import artifact_link, progress_callbacks
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.model.evaluation.report import (
    comparison_markdown,
    metric_rows,
    previous_evaluation,
    render_report,
)
from bertflow.model.evaluation.stage import EvaluateConfig, build_and_publish, plan_evaluation
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.markdown import embedded_png
from bertflow.pipeline.core.store import ArtifactStore


@flow(name="evaluate")
def evaluate_flow(
    model_id: str, config: EvaluateConfig | None = None, store_url: str | None = None
) -> StageResult:
    """Intrinsic MLM/NSP metrics and fine-tuned downstream tasks beside their baselines."""
    config = config or EvaluateConfig()
    store = ArtifactStore(store_url)
    plan = plan_evaluation(store, model_id, config)  # bad ids and task files fail here

    def build():
        callbacks = progress_callbacks(f"evaluating {model_id}")
        return build_and_publish(store, plan, callbacks, flow_run_id=flow_run.get_id())

    def details(manifest: Manifest) -> str:
        """The comparison, then the report (report.md, with every node of its lineage a link),
        then the curves."""
        model = store.require(manifest.upstream["model"])
        link = functools.cache(artifact_link)  # a node shown twice is looked up once
        report = render_report(store, model, manifest.config, manifest.stats, link=link)
        return "\n\n".join(
            [
                comparison_markdown(previous_evaluation(store, manifest), manifest),
                report.replace("# Evaluation of", "## Evaluation of", 1),
                embedded_png(
                    store, manifest.id, manifest.layout["curves"], "Training and fine-tuning curves"
                ),
            ]
        )

    result = cached_or_built(store, plan, "Evaluation", build, details=details)
    rows = metric_rows(result.stats)
    if rows:
        create_table_artifact(
            key=f"{result.id}-metrics", table=rows, description=f"every metric of {result.id}"
        )
    return result

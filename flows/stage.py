"""The shape every stage flow shares: `pipeline/core/stage.py:cached_or_built`, with the build
inside a task that materializes the artifact as a Prefect asset, then the artifact recorded in
Prefect either way."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger

from bertflow.flows.records import materializing, record_artifact, upstream_assets
from bertflow.flows.result import StageResult
from bertflow.pipeline.core import stage
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.stage import Plan
from bertflow.pipeline.core.store import ArtifactStore, Published


def cached_or_built(
    store: ArtifactStore,
    plan: Plan,
    title: str,
    build: Callable[[], Published],
    details: Callable[[Manifest], str] | None = None,
) -> StageResult:
    """`build` runs only when the store has no artifact `plan.artifact_id`; `details` adds a
    stage-specific section to the artifact's Prefect markdown summary."""
    artifact_id = plan.artifact_id

    def build_in_a_task() -> Published:
        task = materializing(
            build,
            store,
            artifact_id,
            description=f"bertflow {title.lower()}",
            asset_deps=upstream_assets(store, plan.upstream, [i.uri for i in plan.inputs]),
        )
        return task()

    published = stage.cached_or_built(store, plan, build_in_a_task)
    get_run_logger().info(
        f"{artifact_id} already exists in {store.url}: nothing to do"
        if published.cached
        else f"published {artifact_id} at {store.uri(artifact_id)}"
    )
    record_artifact(store, published, title, details(published.manifest) if details else "")
    return StageResult.of(store, published)

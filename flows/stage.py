"""The shape every stage flow shares: reuse the artifact if its id exists, else build it inside a
task that materializes it as a Prefect asset; then record it in Prefect either way."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger

from bertflow.flows.records import materializing, record_artifact, upstream_assets
from bertflow.flows.result import StageResult
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import ArtifactStore, Published


def cached_or_built(
    store: ArtifactStore,
    artifact_id: str,
    title: str,
    build: Callable[[], Published],
    upstream: dict[str, str],
    input_uris: list[str],
    details: Callable[[Manifest], str] | None = None,
) -> StageResult:
    """`build` runs only when the store has no artifact `artifact_id`; `details` adds a
    stage-specific section to the artifact's Prefect markdown summary."""
    logger = get_run_logger()
    existing = store.get(artifact_id)
    if existing is not None:
        logger.info(f"{artifact_id} already exists in {store.url}: nothing to do")
        published = Published(existing, cached=True)
    else:
        task = materializing(
            build,
            store,
            artifact_id,
            description=f"bertflow {title.lower()}",
            asset_deps=upstream_assets(store, upstream, input_uris),
        )
        published = task()
        logger.info(f"published {artifact_id} at {store.uri(artifact_id)}")
    record_artifact(store, published, title, details(published.manifest) if details else "")
    return StageResult.of(store, published)

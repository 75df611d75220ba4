"""The ingest flow: raw text -> corpus artifact, cached by content."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from bertflow.flows.records import (
    materializing,
    progress_callbacks,
    record_artifact,
    upstream_assets,
)
from bertflow.flows.result import StageResult
from bertflow.pipeline.ingest import IngestConfig, IngestPlan, build_and_publish, plan_ingest
from bertflow.pipeline.store import ArtifactStore, Published


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def plan(config: IngestConfig) -> IngestPlan:
    """List and fingerprint the inputs: object storage can fail transiently, so this retries."""
    return plan_ingest(config)


def build(the_plan: IngestPlan, store: ArtifactStore) -> Published:
    callbacks = progress_callbacks(
        f"ingesting {len(the_plan.files)} files into {the_plan.artifact_id}"
    )
    return build_and_publish(the_plan, store, callbacks, flow_run_id=flow_run.get_id())


@flow(name="ingest")
def ingest_flow(config: IngestConfig, store_url: str | None = None) -> StageResult:
    """Clean, sentence-split and deduplicate raw text into a `corpus` artifact."""
    logger = get_run_logger()
    store = ArtifactStore(store_url)
    the_plan = plan(config)
    size_mb = sum(f.size for f in the_plan.files) / 1e6
    logger.info(f"{len(the_plan.files)} input files ({size_mb:.1f} MB) -> {the_plan.artifact_id}")
    existing = store.get(the_plan.artifact_id)
    if existing is not None:
        logger.info(f"{existing.id} already exists in {store.url}: nothing to do")
        published = Published(existing, cached=True)
    else:
        build_corpus = materializing(
            build,
            store,
            the_plan.artifact_id,
            description=f"bertflow corpus from {len(the_plan.files)} files",
            asset_deps=upstream_assets(store, {}, [i.uri for i in the_plan.inputs]),
        )
        published = build_corpus(the_plan, store)
    record_artifact(store, published, "Corpus")
    return StageResult.of(store, published)

"""The ingest flow: raw text -> corpus artifact, cached by content."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from bertflow.flows.records import progress_callbacks
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.ingest.config import IngestConfig
from bertflow.pipeline.ingest.plan import IngestPlan, plan_ingest

CORPUS_EVENT = "bertflow.corpus.published"


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def plan(config: IngestConfig) -> IngestPlan:
    """List and fingerprint the inputs: object storage can fail transiently, so this retries."""
    return plan_ingest(config)


@flow(name="ingest")
def ingest_flow(config: IngestConfig, store_url: str | None = None) -> StageResult:
    """Clean, sentence-split and deduplicate raw text into a `corpus` artifact."""
    store = ArtifactStore(store_url)
    the_plan = plan(config)
    size_mb = sum(f.size for f in the_plan.files) / 1e6
    get_run_logger().info(
        f"{len(the_plan.files)} input files ({size_mb:.1f} MB) -> {the_plan.artifact_id}"
    )

    def build():
        # The readers and writers load only when there is a corpus to make: not on a cached run.
        from bertflow.pipeline.ingest.stage import build_and_publish

        callbacks = progress_callbacks(f"ingesting {len(the_plan.files)} files")
        return build_and_publish(store, the_plan, callbacks, flow_run_id=flow_run.get_id())

    result = cached_or_built(store, the_plan, "Corpus", build)
    if not result.cached:
        announce_corpus(result, config)
    return result


def announce_corpus(result: StageResult, config: IngestConfig) -> None:
    """A `bertflow.corpus.published` event for a new corpus, which an automation can turn into
    a pipeline run. Its resource says whether a pipeline made it (a subflow), so the automation
    reacts only to corpora ingested on their own and never starts a second run for one corpus."""
    origin = "pipeline" if flow_run.get_parent_flow_run_id() else "ingest"
    emit_event(
        event=CORPUS_EVENT,
        resource={
            "prefect.resource.id": f"bertflow.artifact.{result.id}",
            "prefect.resource.name": result.id,
            "bertflow.kind": "corpus",
            "bertflow.origin": origin,
        },
        payload={
            "corpus_id": result.id,
            "uri": result.uri,
            "sources": config.sources,
            "documents": result.stats.get("documents", {}),
        },
    )

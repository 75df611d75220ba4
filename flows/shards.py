"""The shard flow: corpus + tokenizer -> shards artifact, cached by content.

The map and write steps run in a local process pool by default. Given `dask_address`, each of
their tasks becomes a Prefect task run on that Dask cluster through `prefect-dask`, for corpora
larger than one machine; the intermediate files then go to `spill_dir`, which every Dask worker
must be able to read and write (the default temporary folder works for a cluster on this host).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner

from bertflow.flows.records import progress_callbacks
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.shards.stage import (
    ShardConfig,
    build_and_publish,
    plan_shards,
    shards_markdown,
)


@task(cache_policy=NO_CACHE, retries=1)
def shard_task(fn: Callable[[Any, Any], Any], work: Any) -> Any:
    """One map or write task of the shard stage, on whichever worker the task runner picks."""
    return fn(work, lambda *progress: None)


def prefect_runner(fn: Callable[[Any, Any], Any], tasks: list[Any]) -> list[Any]:
    """Run the stage's tasks through the flow's task runner (Dask, with `dask_address`)."""
    futures = [shard_task.submit(fn, work) for work in tasks]
    return [f.result() for f in futures]


@flow(name="shard")
def shard_flow(
    corpus_id: str,
    tokenizer_id: str,
    config: ShardConfig | None = None,
    store_url: str | None = None,
    dask_address: str | None = None,
    spill_dir: str | None = None,
) -> StageResult:
    """Make BERT pretraining examples (NSP/SOP pairs, MLM masking) in balanced Parquet shards."""
    config = config or ShardConfig()
    store = ArtifactStore(store_url)
    plan = plan_shards(store, corpus_id, tokenizer_id, config)

    def build():
        callbacks = progress_callbacks(f"sharding {corpus_id}")
        runner = prefect_runner if dask_address else None
        return build_and_publish(
            store,
            plan,
            callbacks,
            flow_run_id=flow_run.get_id(),
            runner=runner,
            spill_root=spill_dir,
        )

    return cached_or_built(store, plan, "Shards", build, details=shards_markdown)


def run_shard_flow(dask_address: str | None = None, **parameters: Any) -> StageResult:
    """shard_flow, on the Dask cluster at `dask_address` when one is given."""
    if dask_address is None:
        return shard_flow(**parameters)
    on_dask = shard_flow.with_options(task_runner=DaskTaskRunner(address=dask_address))
    return on_dask(dask_address=dask_address, **parameters)

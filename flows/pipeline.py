"""The whole pipeline as one flow: ingest -> tokenizer -> shard -> pretrain -> evaluate.

Each stage is its own flow (a subflow run here), and each is cached by its artifact's id: a rerun
with nothing changed finds every artifact and finishes in seconds; a changed training option
reuses the corpus, tokenizer and shards; a changed corpus reruns everything downstream of it.
A failed stage fails the run, leaves the earlier stages' artifacts in place (and nothing of its
own), and the next run starts at that stage.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from bertflow.flows.evaluate import evaluate_flow
from bertflow.flows.ingest import ingest_flow
from bertflow.flows.pipeline_config import PipelineConfig
from bertflow.flows.pretrain import pretrain_flow
from bertflow.flows.records import PipelineProgress, artifact_link, ui_base
from bertflow.flows.result import StageResult
from bertflow.flows.shards import shard_flow
from bertflow.flows.tokenizer import tokenizer_flow
from bertflow.pipeline.core.store import ArtifactStore, Published


class PipelineResult(BaseModel):
    """Each stage's result, in the order they ran (`shard-1`, `pretrain-1`, ... per phase)."""

    stages: dict[str, StageResult]

    @property
    def evaluation(self) -> StageResult:
        return self.stages["evaluate"]


@flow(name="pretraining-pipeline", log_prints=True)
def pretraining_pipeline(config: PipelineConfig | None = None) -> PipelineResult:
    """Pretrain a BERT end to end: ingest -> tokenizer -> shard -> pretrain -> evaluate, every
    stage cached by the id of the artifact it makes."""
    config = config or PipelineConfig()
    store = ArtifactStore(config.store)
    phases = range(1, len(config.phases) + 1)
    names = [
        "ingest",
        "tokenizer",
        *(f"{s}-{n}" for n in phases for s in ("shard", "pretrain")),
        "evaluate",
    ]
    progress = PipelineProgress(names)
    stages: dict[str, StageResult] = {}

    def run(name: str, stage: Callable[..., StageResult], *args: Any, **kwargs: Any) -> str:
        stages[name] = run_stage(progress, name, functools.partial(stage, *args, **kwargs))
        return stages[name].id

    if config.corpus_id:
        corpus = store.require(config.corpus_id, kind="corpus")
        corpus_id = run("ingest", StageResult.of, store, Published(corpus, cached=True))
    else:
        corpus_id = run("ingest", ingest_flow, config=config.ingest, store_url=store.url)
    tokenizer_id = run(
        "tokenizer", tokenizer_flow, corpus_id, config=config.tokenizer, store_url=store.url
    )
    model_id: str | None = None
    for number, phase in zip(phases, config.phases, strict=True):
        shards_id = run(
            f"shard-{number}",
            shard_flow,
            corpus_id,
            tokenizer_id,
            config=phase.shard,
            store_url=store.url,
        )
        training = phase.pretrain
        if model_id is not None:  # phase 2 on starts from the previous phase's model
            training = training.model_copy(update={"init_from": model_id})
        model_id = run(
            f"pretrain-{number}", pretrain_flow, shards_id, config=training, store_url=store.url
        )
    assert model_id is not None  # phases has at least one entry
    run("evaluate", evaluate_flow, model_id, config=config.evaluate, store_url=store.url)
    create_markdown_artifact(
        markdown=run_summary(store, stages),
        description="the artifacts this pipeline run made or reused",
    )
    cached = [name for name, s in stages.items() if s.cached]
    get_run_logger().info(
        f"pipeline done: {len(cached)} of {len(stages)} stages cached; "
        f"evaluation {stages['evaluate'].id}"
    )
    return PipelineResult(stages=stages)


def run_stage(
    progress: PipelineProgress, name: str, stage: Callable[[], StageResult]
) -> StageResult:
    """One stage as the pipeline run's page shows it: a log line as it starts and as it ends
    (its artifact id, made or cached), and the run's progress following it."""
    logger = get_run_logger()
    number = progress.stages.index(name) + 1
    logger.info(f"stage {number}/{len(progress.stages)} {name}: started")
    started = time.monotonic()
    try:
        with progress.stage(name):
            result = stage()
    except BaseException as e:  # Prefect's cancellation is a BaseException (TerminationSignal)
        how = "failed" if isinstance(e, Exception) else "stopped (cancelled or interrupted)"
        logger.error(
            f"stage {number}/{len(progress.stages)} {name}: {how} after "
            f"{time.monotonic() - started:.1f} s"
        )
        raise
    made = "cached" if result.cached else "made"
    logger.info(
        f"stage {number}/{len(progress.stages)} {name}: {result.id} {made} in "
        f"{time.monotonic() - started:.1f} s"
    )
    return result


def run_summary(store: ArtifactStore, stages: dict[str, StageResult]) -> str:
    lines = [
        f"# Pipeline run `{flow_run.get_name()}`",
        "",
        "| stage | artifact | cached | upstream |",
        "|---|---|---|---|",
    ]
    link = functools.cache(artifact_link)  # one look-up per artifact, though linked twice
    for name, s in stages.items():
        ups = sorted(s.upstream.items())
        upstream = ", ".join(f"{role} {link(up)}" for role, up in ups)
        lines.append(
            f"| {name} | {link(s.id)} | {'yes' if s.cached else 'no'} | "
            f"{upstream or 'raw inputs'} |"
        )
    evaluation = stages["evaluate"].id
    lines += [
        "",
        f"The evaluation's report, with the whole lineage: {link(evaluation)}; "
        f"in a terminal: `bertflow lineage {evaluation}`, `bertflow evaluate show "
        f"{evaluation}`. Store: `{store.url}`.",
        "",
        f"Every artifact has a page (neither UI's sidebar lists artifacts): "
        f"`{ui_base()}/artifacts/key/<artifact id>` shows its versions, and each link "
        f"above opens its latest content; this run's own records are on its Artifacts "
        f"tab.",
    ]
    return "\n".join(lines)

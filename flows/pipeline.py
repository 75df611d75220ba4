"""The whole pipeline as one flow: ingest -> tokenizer -> shard -> pretrain -> evaluate.

Each stage is its own flow (a subflow run here), and each is cached by its artifact's id: a rerun
with nothing changed finds every artifact and finishes in seconds; a changed training option
reuses the corpus, tokenizer and shards; a changed corpus reruns everything downstream of it.
A failed stage fails the run, leaves the earlier stages' artifacts in place (and nothing of its
own), and the next run starts at that stage.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from bertflow.flows.evaluate import evaluate_flow
from bertflow.flows.ingest import ingest_flow
from bertflow.flows.pipeline_config import PipelineConfig
from bertflow.flows.pretrain import pretrain_flow
from bertflow.flows.records import artifact_link
from bertflow.flows.result import StageResult
from bertflow.flows.shards import shard_flow
from bertflow.flows.tokenizer import tokenizer_flow
from bertflow.pipeline.store import ArtifactStore, Published


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
    logger = get_run_logger()
    stages: dict[str, StageResult] = {}
    if config.corpus_id:
        corpus = store.require(config.corpus_id, kind="corpus")
        stages["ingest"] = StageResult.of(store, Published(corpus, cached=True))
    else:
        stages["ingest"] = ingest_flow(config=config.ingest, store_url=store.url)
    corpus_id = stages["ingest"].id
    stages["tokenizer"] = tokenizer_flow(corpus_id, config=config.tokenizer, store_url=store.url)
    model_id: str | None = None
    for number, phase in enumerate(config.phases, start=1):
        shards = shard_flow(corpus_id, stages["tokenizer"].id, config=phase.shard,
                            store_url=store.url)  # fmt: skip
        training = phase.pretrain
        if model_id is not None:  # phase 2 on starts from the previous phase's model
            training = training.model_copy(update={"init_from": model_id})
        model = pretrain_flow(shards.id, config=training, store_url=store.url)
        stages[f"shard-{number}"], stages[f"pretrain-{number}"] = shards, model
        model_id = model.id
    assert model_id is not None  # phases has at least one entry
    stages["evaluate"] = evaluate_flow(model_id, config=config.evaluate, store_url=store.url)
    create_markdown_artifact(
        markdown=run_summary(store, stages),
        description="the artifacts this pipeline run made or reused",
    )
    cached = [name for name, s in stages.items() if s.cached]
    logger.info(f"pipeline done: {len(cached)} of {len(stages)} stages cached; evaluation "
                f"{stages['evaluate'].id}")  # fmt: skip
    return PipelineResult(stages=stages)


def run_summary(store: ArtifactStore, stages: dict[str, StageResult]) -> str:
    lines = ["# Pipeline run", "", "| stage | artifact | cached | upstream |", "|---|---|---|---|"]
    for name, s in stages.items():
        ups = sorted(s.upstream.items())
        upstream = ", ".join(f"{role} {artifact_link(up)}" for role, up in ups)
        lines.append(f"| {name} | {artifact_link(s.id)} | {'yes' if s.cached else 'no'} | "
                     f"{upstream or 'raw inputs'} |")  # fmt: skip
    evaluation = stages["evaluate"].id
    lines += ["", f"The evaluation's report, with the whole lineage: {artifact_link(evaluation)}; "
              f"in a terminal: `bertflow lineage {evaluation}`, `bertflow evaluate --show "
              f"{evaluation}`. Store: `{store.url}`."]  # fmt: skip
    return "\n".join(lines)

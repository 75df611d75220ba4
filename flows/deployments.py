"""Deployments of the pipeline and of each stage flow, for `bertflow serve`.

Served deployments run in the serving process: a user opens one in the Prefect UI, fills in the
form its config renders, and runs it. The pipeline deployment carries a cron schedule (inactive
until the user turns it on) whose runs re-ingest the configured sources, cheap when nothing
changed because every stage is cached by content, and an automation (off by default) that runs
the pipeline on each corpus ingested on its own. The pipeline and pretrain deployments run at
most `concurrency` runs at a time; later ones wait (Prefect's deployment concurrency limit).
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron

from bertflow.flows.evaluate import evaluate_flow
from bertflow.flows.ingest import CORPUS_EVENT, ingest_flow
from bertflow.flows.pipeline import pretraining_pipeline
from bertflow.flows.pipeline_config import PipelineConfig
from bertflow.flows.pretrain import pretrain_flow
from bertflow.flows.serve_options import ServeOptions
from bertflow.flows.shards import shard_flow
from bertflow.flows.tokenizer import tokenizer_flow

PIPELINE_DEPLOYMENT = "bertflow-pipeline"
TAGS = ["bertflow"]
AUTOMATION = "bertflow: pretrain on each new corpus"


def deployments(
    config: PipelineConfig, options: ServeOptions | None = None
) -> list[RunnerDeployment]:
    """The pipeline deployment first, then one per stage flow, each named for what it runs
    (`bertflow-pipeline`, `bertflow-ingest`, ...), as the UI's breadcrumbs and the
    automation's action show them."""
    options = options or ServeOptions()
    parameters = {"config": config.editable()}
    limit = ConcurrencyLimitConfig(
        limit=options.concurrency, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    pipeline = pretraining_pipeline.to_deployment(
        name=PIPELINE_DEPLOYMENT,
        tags=TAGS,
        parameters=parameters,
        concurrency_limit=limit,
        description="Ingest -> tokenizer -> shard -> pretrain -> evaluate, each stage cached.",
        schedules=[
            Cron(
                options.cron,
                timezone=options.timezone,
                active=options.schedule_active,
                parameters=parameters,
            )
        ],
        triggers=[new_corpus_trigger(config, options)],
    )
    stages = [
        ingest_flow.to_deployment(
            name=stage_deployment("ingest"),
            tags=TAGS,
            parameters={"config": parameters["config"]["ingest"]},
        ),
        tokenizer_flow.to_deployment(name=stage_deployment("tokenizer"), tags=TAGS),
        shard_flow.to_deployment(name=stage_deployment("shard"), tags=TAGS),
        pretrain_flow.to_deployment(
            name=stage_deployment("pretrain"), tags=TAGS, concurrency_limit=limit
        ),
        evaluate_flow.to_deployment(name=stage_deployment("evaluate"), tags=TAGS),
    ]
    return [pipeline, *stages]


def stage_deployment(stage: str) -> str:
    """The served deployment of one stage flow: `bertflow-<stage>`."""
    return f"bertflow-{stage}"


def new_corpus_trigger(config: PipelineConfig, options: ServeOptions) -> DeploymentEventTrigger:
    """Run the pipeline on a corpus when one is ingested on its own (not by a pipeline run,
    which trains on its corpus anyway), with the served config and that corpus."""
    parameters: dict[str, Any] = config.editable()
    parameters["corpus_id"] = "{{ event.payload.corpus_id }}"
    return DeploymentEventTrigger(
        name=AUTOMATION,
        enabled=options.automation,
        description="Starts the pretraining pipeline for each corpus `bertflow ingest` publishes.",
        expect={CORPUS_EVENT},
        match={"bertflow.origin": "ingest"},
        parameters={"config": parameters},
    )

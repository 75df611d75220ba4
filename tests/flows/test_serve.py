"""`bertflow serve` against a real Prefect server: the deployments, their schedule, concurrency
limit and automation as configured, and runs created through the API as the UI's form does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect_records import PrefectRecords, bertflow_serve, poll, wait_for_run

from bertflow.flows.cli import build_parser, main, serve_options
from bertflow.flows.deployments import AUTOMATION
from bertflow.flows.ingest import CORPUS_EVENT, ingest_flow
from bertflow.pipeline.core.store import ArtifactStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
STAGE_FLOWS = ["ingest", "tokenizer", "shard", "pretrain", "evaluate"]
PIPELINE = "pretraining-pipeline/bertflow-pipeline"
EVERY_MINUTE = "* * * * *"  # served inactive; the schedule test turns it on, then off


def deployment(name: str) -> Any:
    return PrefectRecords().deployment(name)


@pytest.fixture(scope="module")
def served(prefect_server, pipeline_config, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """`bertflow serve` in its own process group (as a user runs it), for this module's tests."""
    tmp_path = tmp_path_factory.mktemp("served")
    store = ArtifactStore(str(tmp_path / "store"))
    config = pipeline_config(store.url, tmp_path)
    options = ["--cron", EVERY_MINUTE, "--timezone", "Europe/Paris", "--automation"]
    with bertflow_serve(tmp_path, config, *options) as log:
        yield {"config": config, "store": store, "log": log}


def test_serve_registers_the_deployments_schedule_limit_and_automation(served, prefect_server):
    pipeline = deployment(PIPELINE)
    assert pipeline is not None
    for name in STAGE_FLOWS:
        assert deployment(f"{name}/bertflow-{name}") is not None, name
    [schedule] = pipeline.schedules
    assert not schedule.active  # inactive until the user turns it on
    assert schedule.schedule.cron == EVERY_MINUTE and schedule.schedule.timezone == "Europe/Paris"
    assert schedule.parameters["config"]["ingest"]["sources"] == ["demo-small"]  # re-ingests
    assert pipeline.global_concurrency_limit.limit == 1
    assert deployment("pretrain/bertflow-pretrain").global_concurrency_limit.limit == 1
    assert pipeline.parameters["config"] == served["config"].editable()
    said = served["log"].read_text()
    assert f"{PIPELINE}: cron '{EVERY_MINUTE}' (Europe/Paris), inactive" in said
    assert f"automation '{AUTOMATION}' on" in said
    assert f"run them from {prefect_server.url}/v2/deployments " in said  # the default UI

    with get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(AUTOMATION)
    assert automation.enabled  # as --automation asked
    assert automation.trigger.expect == {CORPUS_EVENT}
    assert automation.trigger.match.model_dump()["bertflow.origin"] == "ingest"
    [action] = automation.actions
    assert action.type == "run-deployment" and action.deployment_id == pipeline.id
    config = action.parameters["config"]
    assert "event.payload.corpus_id" in str(config["corpus_id"])
    assert config["tokenizer"] == served["config"].tokenizer.model_dump(mode="json")


def test_a_run_created_with_form_parameters_completes_then_reruns_cached(served, prefect_records):
    pipeline = deployment(PIPELINE)
    store: ArtifactStore = served["store"]
    parameters = {"config": served["config"].editable()}
    parameters["config"]["evaluate"]["seeds"] = 2  # what a user changes in the form

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(pipeline.id, parameters=parameters)
    done = wait_for_run(run.id, 300)
    assert done is not None, f"the run did not finish:\n{served['log'].read_text()[-3000:]}"
    assert done.state.is_completed(), served["log"].read_text()[-3000:]
    [evaluation] = store.list("evaluation")
    assert [t["seeds"] for t in evaluation.stats["tasks"].values()] == [[0, 1]]
    assert {m.kind for m in store.list()} == {
        "corpus",
        "tokenizer",
        "shards",
        "model",
        "evaluation",
    }
    [summary] = prefect_records.artifacts(run.id, "markdown")
    assert evaluation.id in summary.data and "| no |" in summary.data
    report = prefect_records.keyed(evaluation.id).data
    assert store.require(evaluation.upstream["model"]).upstream["shards"] in report

    with get_client(sync_client=True) as client:
        again = client.create_flow_run_from_deployment(pipeline.id, parameters=parameters)
    done = wait_for_run(again.id, 120)
    assert done is not None and done.state.is_completed()
    [summary] = prefect_records.artifacts(again.id, "markdown")
    assert summary.data.count("| yes |") == 5 and "| no |" not in summary.data
    assert len(store.list()) == 5


def test_a_bad_value_in_the_form_is_rejected_naming_the_field(served):
    pipeline = deployment(PIPELINE)
    parameters = {"config": served["config"].editable()}
    parameters["config"]["phases"][0]["pretrain"]["max_steps"] = 0
    with get_client(sync_client=True) as client, pytest.raises(PrefectHTTPStatusError) as error:
        client.create_flow_run_from_deployment(pipeline.id, parameters=parameters)
    assert "max_steps" in str(error.value.response.text)


def test_a_corpus_ingested_on_its_own_starts_the_pipeline_on_it(served, prefect_records):
    """The automation: `bertflow ingest` publishes a corpus, its event starts the pipeline
    deployment with that corpus, and the served process trains and evaluates on it."""
    store: ArtifactStore = served["store"]
    pipeline = deployment(PIPELINE)
    ingest = served["config"].ingest.model_copy(update={"min_sentence_chars": 5})
    corpus = ingest_flow(config=ingest, store_url=store.url)
    assert not corpus.cached

    def triggered() -> list[Any]:
        runs = prefect_records.runs_of(pipeline.id)
        return [r for r in runs if r.parameters["config"].get("corpus_id") == corpus.id]

    runs = poll(triggered, 60, every_s=1.0)
    assert len(runs) == 1, f"no run was triggered:\n{served['log'].read_text()[-3000:]}"
    done = wait_for_run(runs[0].id, 300)
    assert done is not None and done.state.is_completed(), served["log"].read_text()[-3000:]
    trained = [m for m in store.list("shards") if m.upstream["corpus"] == corpus.id]
    assert len(trained) == 1  # the event's corpus, not a re-ingest of the sources
    assert len(triggered()) == 1  # the pipeline's own stages triggered nothing more


def test_turning_the_schedule_on_makes_runs_that_the_served_process_completes(
    served, prefect_records
):
    """As a user does in the UI: the schedule's toggle on; the server's scheduler makes runs
    (every minute here), the served process runs them to Completed; toggled off, the runs it
    had planned are gone. Last of the runs in this module: the pipeline runs one at a time."""
    pipeline = deployment(PIPELINE)
    [schedule] = pipeline.schedules
    with get_client(sync_client=True) as client:
        client.update_deployment_schedule(pipeline.id, schedule.id, active=True)
        try:

            def scheduled() -> list[Any]:
                return [r for r in prefect_records.runs_of(pipeline.id) if r.auto_scheduled]

            runs = poll(scheduled, 60, every_s=1.0)
            assert runs, f"the scheduler made no run:\n{served['log'].read_text()[-3000:]}"
            first = min(runs, key=lambda r: r.expected_start_time)
            assert first.parameters == {"config": served["config"].editable()}
            done = wait_for_run(first.id, 240)
            assert done is not None, f"the run did not finish:\n{served['log'].read_text()[-3000:]}"
            assert done.state.is_completed(), served["log"].read_text()[-3000:]
        finally:
            client.update_deployment_schedule(pipeline.id, schedule.id, active=False)
            off = datetime.now(UTC)
    planned = [r for r in scheduled() if r.state.is_scheduled() and r.expected_start_time > off]
    assert planned == []  # turning it off removed the runs it had planned
    assert served["store"].list("evaluation")  # the scheduled run trained and evaluated


def test_the_automation_and_schedule_are_off_unless_asked_for():
    from bertflow.flows.deployments import deployments
    from bertflow.flows.pipeline_config import PipelineConfig

    pipeline = deployments(PipelineConfig())[0]
    assert [s.active for s in pipeline.schedules] == [False]
    assert [t.enabled for t in pipeline.triggers] == [False]
    options = serve_options(build_parser().parse_args(["serve"]))
    assert (options.automation, options.schedule_active, options.concurrency) == (False, False, 1)


def test_serve_without_a_server_says_how_to_start_one(monkeypatch, capsys):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "prefect server start" in err and "PREFECT_API_URL=http://127.0.0.1:4200/api" in err


def test_serve_refuses_a_concurrency_below_one(monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert main(["serve", "--concurrency", "0"]) == 2
    assert "--concurrency" in capsys.readouterr().err

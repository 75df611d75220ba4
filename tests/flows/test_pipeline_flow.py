"""The whole pipeline as one flow against a real Prefect server: every stage, caching by
content, an S3 store, a failing stage, and the corpus events that drive retraining."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import get_current_settings
from prefect_records import PrefectRecords, poll

from bertflow.flows.cli import main
from bertflow.flows.ingest import CORPUS_EVENT, ingest_flow
from bertflow.flows.pipeline import pretraining_pipeline
from bertflow.flows.pipeline_config import to_yaml
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.lineage import lineage
from bertflow.pipeline.core.store import ArtifactStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
STAGES = ["ingest", "tokenizer", "shard-1", "pretrain-1", "evaluate"]
KINDS = ["corpus", "tokenizer", "shards", "model", "evaluation"]


@pytest.fixture(autouse=True)
def runs_folder(tmp_path, monkeypatch):
    """Training run folders (checkpoints, logs) under the test's folder."""
    monkeypatch.setenv("BERTFLOW_RUNS", str(tmp_path / "runs"))


def page_link(records: PrefectRecords, artifact_id: str) -> str:
    """The markdown link to the content page of the artifact's latest keyed Prefect artifact,
    in the UI the server serves by default."""
    return f"[`{artifact_id}`]({get_current_settings().ui_url}{records.page(artifact_id)})"


def stage_lines(records: PrefectRecords, flow_run_id: Any) -> list[str]:
    return [m for m in records.logs(flow_run_id) if m.startswith("stage ")]


def chain(store: ArtifactStore, evaluation_id: str) -> list[str]:
    """Kinds from the evaluation down its first upstream link to the raw inputs."""
    kinds, node = [], lineage(store, evaluation_id)
    while node:
        kinds.append(node["kind"])
        node = next((up for up in node["upstream"] if up["role"] != "tokenizer"), None)
    return kinds


def test_every_stage_runs_then_a_rerun_is_cached_and_changes_rerun_only_downstream(
    pipeline_config, tmp_path, prefect_records
):
    store = ArtifactStore(str(tmp_path / "store"))
    config = pipeline_config(store.url, tmp_path)
    state = pretraining_pipeline(config=config, return_state=True)
    first = state.result()
    assert list(first.stages) == STAGES
    assert [s.kind for s in first.stages.values()] == KINDS
    assert not any(s.cached for s in first.stages.values())
    evaluation = store.require(first.evaluation.id)
    assert evaluation.upstream == {"model": first.stages["pretrain-1"].id}
    assert chain(store, evaluation.id) == ["evaluation", "model", "shards", "corpus"]
    run_id = state.state_details.flow_run_id
    summary = prefect_records.artifacts(run_id, "markdown")
    assert len(summary) == 1 and first.evaluation.id in summary[0].data
    for stage in first.stages.values():  # links to each artifact's content page
        assert page_link(prefect_records, stage.id) in summary[0].data
    model = prefect_records.keyed(first.stages["pretrain-1"].id).data
    assert page_link(prefect_records, first.stages["shard-1"].id) in model  # links its upstream
    assert "![Loss curve](data:image/png;base64," in model  # the curve shown, not a path
    report = prefect_records.keyed(first.evaluation.id).data
    for stage in first.stages.values():  # every node of the evaluation's lineage is a link
        if stage.kind != "evaluation":
            assert page_link(prefect_records, stage.id) in report, stage.id
    assert "![Training and fine-tuning curves](data:image/png;base64," in report

    # The pipeline run's own page follows the stages: its progress, and a line per stage.
    [progress] = prefect_records.artifacts(run_id, "progress")
    assert progress.data == 100.0 and progress.description == "pipeline: all stages done"
    logs = poll(
        lambda: (
            len(stage_lines(prefect_records, run_id)) == 10 and stage_lines(prefect_records, run_id)
        ),
        30,
    )  # the logs reach the server in batches
    assert logs and logs[:2] == ["stage 1/5 ingest: started", logs[1]]
    assert logs[1].startswith(f"stage 1/5 ingest: {first.stages['ingest'].id} made in ")
    assert logs[-1].startswith(f"stage 5/5 evaluate: {first.evaluation.id} made in ")

    again_state = pretraining_pipeline(config=config, return_state=True)
    again = again_state.result()
    assert all(s.cached for s in again.stages.values())
    again_id = again_state.state_details.flow_run_id
    again_logs = poll(
        lambda: (
            len(stage_lines(prefect_records, again_id)) == 10
            and stage_lines(prefect_records, again_id)
        ),
        30,
    )
    assert f"stage 4/5 pretrain-1: {first.stages['pretrain-1'].id} cached in " in " ".join(
        again_logs or []
    )
    assert {n: s.id for n, s in again.stages.items()} == {n: s.id for n, s in first.stages.items()}

    longer = config.model_copy(
        update={
            "phases": [
                config.phases[0].model_copy(
                    update={
                        "pretrain": config.phases[0].pretrain.model_copy(update={"max_steps": 14})
                    }
                )
            ]
        }
    )
    retrained = pretraining_pipeline(config=longer)
    assert {n: s.cached for n, s in retrained.stages.items()} == {
        "ingest": True,
        "tokenizer": True,
        "shard-1": True,
        "pretrain-1": False,
        "evaluate": False,
    }

    other_corpus = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"validation_fraction": 0.2})}
    )
    reingested = pretraining_pipeline(config=other_corpus)
    assert not any(s.cached for s in reingested.stages.values())


def test_the_pipeline_end_to_end_on_an_s3_store(pipeline_config, s3_env, tmp_path):
    result = pretraining_pipeline(config=pipeline_config(s3_env, tmp_path))
    store = ArtifactStore(s3_env)
    for stage in result.stages.values():
        assert stage.uri.startswith(s3_env.replace("/store", "")), stage.uri
        assert store.verify(stage.id) == [], stage.id
    assert chain(store, result.evaluation.id) == ["evaluation", "model", "shards", "corpus"]
    assert store.fs.exists(f"{store.root}/evaluation/{result.evaluation.id}/curves.png")


def test_a_failed_stage_fails_the_run_keeps_earlier_artifacts_and_the_rerun_resumes_there(
    pipeline_config, tmp_path
):
    store = ArtifactStore(str(tmp_path / "store"))
    good = pipeline_config(store.url, tmp_path)
    phase = good.phases[0]
    bad = good.model_copy(
        update={
            "phases": [
                phase.model_copy(
                    update={"pretrain": phase.pretrain.model_copy(update={"batch_size": 100_000})}
                )
            ]
        }
    )
    state = pretraining_pipeline(config=bad, return_state=True)
    assert state.is_failed()
    with pytest.raises(InputError, match="--batch-size"):
        state.result()
    kept = {m.kind: m.id for m in store.list()}
    assert set(kept) == {"corpus", "tokenizer", "shards"}  # nothing of pretrain or later
    assert all(store.verify(i) == [] for i in kept.values())
    staging = tmp_path / "store" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())

    resumed = pretraining_pipeline(config=good)
    assert {n: s.cached for n, s in resumed.stages.items()} == {
        "ingest": True,
        "tokenizer": True,
        "shard-1": True,
        "pretrain-1": False,
        "evaluate": False,
    }
    assert resumed.stages["ingest"].id == kept["corpus"]


def corpus_events(corpus_id: str, timeout_s: float = 30.0) -> list:
    """The corpus events the server holds for this corpus (events arrive shortly after)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            events = client.read_events(
                filter=EventFilter(event=EventNameFilter(name=[CORPUS_EVENT])), limit=50
            ).events
            found = [e for e in events if e.payload.get("corpus_id") == corpus_id]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def test_ingesting_a_new_corpus_emits_an_event_saying_who_ingested_it(pipeline_config, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = pipeline_config(store.url, tmp_path)
    # corpora no other test makes, so the server holds no other events for them
    alone_config = config.ingest.model_copy(update={"min_sentence_chars": 3})
    alone = ingest_flow(config=alone_config, store_url=store.url)
    events = corpus_events(alone.id)
    assert len(events) == 1
    assert events[0].resource["bertflow.origin"] == "ingest"
    assert events[0].resource.id == f"bertflow.artifact.{alone.id}"
    assert events[0].payload["sources"] == ["demo-small"]
    assert ingest_flow(config=alone_config, store_url=store.url).cached
    assert len(corpus_events(alone.id, timeout_s=2)) == 1  # a cached corpus is not news

    other = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"min_sentence_chars": 4})}
    )
    run = pretraining_pipeline(config=other)
    events = corpus_events(run.stages["ingest"].id)
    assert [e.resource["bertflow.origin"] for e in events] == ["pipeline"]


def test_bertflow_run_prints_the_stages_the_lineage_and_where_to_look_next(
    pipeline_config, tmp_path, capsys
):
    path = tmp_path / "pipeline.yaml"
    path.write_text(to_yaml(pipeline_config(str(tmp_path / "store"), tmp_path)))
    assert main(["run", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    evaluation = next(w for w in out.split() if w.startswith("evaluation-"))
    for stage in STAGES:
        assert f"\n{stage} " in out, stage
    assert f"\n{evaluation}  [" in out  # the lineage tree, rooted at the evaluation
    assert "├── model: model-" in out and "corpus: corpus-" in out
    assert "TF-IDF" in out  # the downstream table beside its baseline
    assert f"next: bertflow evaluate show {evaluation}" in out
    report_page = PrefectRecords().page(evaluation)  # PREFECT_API_URL is the test server's
    assert f"Prefect UI: {get_current_settings().ui_url}{report_page} " in out

    assert main(["run", "--config", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["evaluation"] == evaluation
    assert all(stage["cached"] for stage in result["stages"].values())


def test_a_second_phase_trains_longer_sequences_from_the_first_phases_model(
    pipeline_config, tmp_path
):
    """BERT's recipe in miniature: 64-token shards, then 96-token shards from that model."""
    store = ArtifactStore(str(tmp_path / "store"))
    config = pipeline_config(store.url, tmp_path)
    first = config.phases[0]
    second = first.model_copy(
        update={
            "shard": first.shard.model_copy(update={"max_seq_len": 96}),
            "pretrain": first.pretrain.model_copy(update={"max_steps": 6, "batch_size": 8}),
        }
    )
    result = pretraining_pipeline(config=config.model_copy(update={"phases": [first, second]}))
    assert list(result.stages) == [
        "ingest",
        "tokenizer",
        "shard-1",
        "pretrain-1",
        "shard-2",
        "pretrain-2",
        "evaluate",
    ]
    phase_two = store.require(result.stages["pretrain-2"].id)
    assert phase_two.upstream == {
        "shards": result.stages["shard-2"].id,
        "init": result.stages["pretrain-1"].id,
    }
    assert store.require(result.stages["shard-2"].id).layout["max_seq_len"] == 96
    assert result.evaluation.upstream == {"model": phase_two.id}

"""The evaluate flow against a real Prefect server, and the evaluate command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertflow.flows.cli import main
from bertflow.flows.evaluate import evaluate_flow
from bertflow.model.evaluation.stage import EvaluateConfig
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.pipeline.core.store import ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")


def task_file(folder: Path) -> Path:
    """Sixty labelled lines: enough to fine-tune for a step or two."""
    path = folder / "tiny-task.jsonl"
    with open(path, "w") as f:
        for i in range(60):
            words = "peace and hope" if i % 2 else "war and fear"
            record = {"text": f"the nation saw {words} in year {i}", "label": i % 2}
            f.write(json.dumps(record) + "\n")
    return path


def config(folder: Path, **changes) -> EvaluateConfig:
    fields = dict(
        tasks=[TaskSpec(path=str(task_file(folder)))],
        seeds=2,
        epochs=1,
        batch_size=16,
        device="cpu",
        intrinsic_max_batches=2,
        max_seq_len=32,
    )
    return EvaluateConfig(**{**fields, **changes})


def test_flow_publishes_report_table_and_progress_then_reruns_cached(
    tiny_shards, tiny_model, tmp_path, prefect_records
):
    store = ArtifactStore(tiny_shards.store_url)
    state = evaluate_flow(
        tiny_model, config=config(tmp_path), store_url=store.url, return_state=True
    )
    result = state.result()
    assert result.kind == "evaluation" and not result.cached
    assert result.upstream == {"model": tiny_model}

    report = prefect_records.keyed(result.id).data
    for upstream in (
        tiny_model,
        tiny_shards.shards_id,
        tiny_shards.tokenizer_id,
        tiny_shards.corpus_id,
    ):
        assert upstream in report
    assert "| tiny-task | test (12) | accuracy |" in report
    assert "Compared with the previous evaluation" in report
    assert "curves.png" in report
    table = prefect_records.keyed(f"{result.id}-metrics")
    rows = json.loads(table.data)
    assert {(r["task"], r["metric"]) for r in rows} >= {
        ("intrinsic", "MLM loss"),
        ("tiny-task", "accuracy"),
        ("tiny-task", "f1"),
    }
    progress = prefect_records.artifacts(state.state_details.flow_run_id, "progress")
    assert [a.data for a in progress] == [100.0]

    # A second evaluation of the same tasks (another seed) is compared with the first.
    second = evaluate_flow(tiny_model, config=config(tmp_path, seed=3), store_url=store.url)
    compared = prefect_records.keyed(second.id).data
    assert f"Previous: `{result.id}`" in compared
    assert "| tiny-task accuracy |" in compared

    again = evaluate_flow(
        tiny_model, config=config(tmp_path), store_url=store.url, return_state=True
    )
    assert again.result().cached and again.result().id == result.id
    assert prefect_records.artifacts(again.state_details.flow_run_id, "progress") == []


def test_cli_evaluates_prints_the_table_then_compares(tiny_shards, tiny_model, tmp_path, capsys):
    spec = f"path={task_file(tmp_path)},name=cli-task"
    argv = [
        "--store",
        tiny_shards.store_url,
        "evaluate",
        "--model",
        tiny_model,
        "--task",
        spec,
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--intrinsic-max-batches",
        "1",
        "--baselines",
        "tfidf",
    ]
    assert main([*argv, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["kind"] == "evaluation"
    assert first["stats"]["tasks"]["cli-task"]["baselines"].keys() == {"tfidf"}

    assert main([*argv, "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "cli-task accuracy" in out and first["id"] in out  # beside the previous evaluation
    second = next(w for w in out.split() if w.startswith("evaluation-") and w != first["id"])

    assert main(["--store", tiny_shards.store_url, "evaluate", "compare", first["id"], second]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", first["id"], second]
    assert any(line.startswith("cli-task accuracy") for line in lines)


def test_cli_names_bad_input(tiny_shards, tiny_model, tmp_path, capsys):
    store = ["--store", tiny_shards.store_url]
    assert main([*store, "evaluate", "--model", tiny_shards.shards_id]) == 1
    assert "is a shards artifact, not a model artifact" in capsys.readouterr().err
    assert (
        main([*store, "evaluate", "--model", tiny_model, "--task", str(tmp_path / "absent.csv")])
        == 1
    )
    assert "absent.csv" in capsys.readouterr().err
    assert main([*store, "evaluate", "--model", tiny_model, "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main([*store, "evaluate", "compare", tiny_model]) == 1
    assert "is a model artifact, not an evaluation artifact" in capsys.readouterr().err


def test_cli_show_prints_the_report(tiny_shards, tiny_model, tmp_path, capsys):
    store = ArtifactStore(tiny_shards.store_url)
    result = evaluate_flow(tiny_model, config=config(tmp_path, seed=11), store_url=store.url)
    capsys.readouterr()
    assert main(["--store", store.url, "evaluate", "show", result.id]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Evaluation of `{tiny_model}`")
    assert "## Lineage" in out and tiny_shards.corpus_id in out
    assert "| tiny-task | test (12) | accuracy |" in out

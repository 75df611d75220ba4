"""The tokenizer flow and CLI against a real Prefect server."""

from __future__ import annotations

import json

import pytest
from prefect_records import PrefectRecords

from bertflow.flows.cli import main
from bertflow.flows.tokenizer import tokenizer_flow
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.ingest.stage import IngestConfig, ingest
from bertflow.pipeline.tokenizer.stage import TokenizerConfig

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def corpus(tmp_path) -> tuple[ArtifactStore, str]:
    store = ArtifactStore(str(tmp_path / "store"))
    config = IngestConfig(sources=["demo-small"], validation_fraction=0.2, workers=1)
    return store, ingest(store, config).manifest.id


def read_markdown(key: str) -> str:
    return PrefectRecords().keyed(key).data


def test_flow_publishes_tokenizer_with_report_and_reruns_cached(corpus):
    store, corpus_id = corpus
    config = TokenizerConfig(vocab_size=1200, limit_alphabet=150)
    result = tokenizer_flow(corpus_id=corpus_id, config=config, store_url=store.url)
    assert result.kind == "tokenizer" and not result.cached
    assert result.upstream == {"corpus": corpus_id}
    report = read_markdown(result.id)
    assert corpus_id in report and "Most frequent tokens" in report and "`[CLS]`" not in report
    again = tokenizer_flow(corpus_id=corpus_id, config=config, store_url=store.url)
    assert again.cached and again.id == result.id


def test_cli_tokenizer_cased_json_and_lineage(corpus, capsys):
    store, corpus_id = corpus
    argv = [
        "--store",
        store.url,
        "tokenizer",
        "--corpus",
        corpus_id,
        "--vocab-size",
        "1200",
        "--limit-alphabet",
        "150",
        "--cased",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert store.require(result["id"]).config["lowercase"] is False
    assert main(["--store", store.url, "lineage", result["id"]]) == 0
    tree = capsys.readouterr().out
    assert tree.index(result["id"]) < tree.index(f"corpus: {corpus_id}") < tree.index("raw inputs")


def test_cli_reports_a_wrong_upstream_kind(corpus, capsys):
    store, corpus_id = corpus
    assert main(["--store", store.url, "tokenizer", "--corpus", "corpus-" + "1" * 20]) == 1
    assert "no artifact corpus-1111" in capsys.readouterr().err
    assert (
        main(["--store", store.url, "tokenizer", "--corpus", corpus_id, "--vocab-size", "2"]) == 2
    )
    assert "--vocab-size" in capsys.readouterr().err

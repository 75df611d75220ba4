"""The shard flow: CLI, lineage, and the map step on a Dask cluster (local, on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distributed import LocalCluster

from bertflow.flows.cli import main
from bertflow.flows.shards import run_shard_flow
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.ingest.stage import IngestConfig, ingest
from bertflow.pipeline.shards.stage import ShardConfig
from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer

pytestmark = pytest.mark.usefixtures("prefect_server")
CONFIG = ShardConfig(max_seq_len=64, num_shards=4, num_validation_shards=2, workers=2)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> tuple[ArtifactStore, str, str]:
    store = ArtifactStore(str(tmp_path_factory.mktemp("store")))
    corpus = ingest(store, IngestConfig(sources=["demo-small"], validation_fraction=0.2, workers=1))
    tokenizer_config = TokenizerConfig(vocab_size=1500, limit_alphabet=200)
    tokenizer = make_tokenizer(store, corpus.manifest.id, tokenizer_config)
    return store, corpus.manifest.id, tokenizer.manifest.id


def linked_store(root: Path, store: ArtifactStore, *ids: str) -> ArtifactStore:
    """A new store that shares `ids` with `store`, so a stage can run again from scratch."""
    for artifact in ids:
        kind = artifact.split("-")[0]
        (root / kind).mkdir(parents=True, exist_ok=True)
        (root / kind / artifact).symlink_to(store.local_path(artifact))
    return ArtifactStore(str(root))


def test_cli_shard_json_and_lineage_down_to_raw_inputs(upstream, tmp_path, capsys):
    store, corpus_id, tokenizer_id = (
        linked_store(tmp_path / "s", upstream[0], *upstream[1:]),
        *upstream[1:],
    )
    argv = [
        "--store",
        store.url,
        "shard",
        "--corpus",
        corpus_id,
        "--tokenizer",
        tokenizer_id,
        "--max-seq-len",
        "64",
        "--num-shards",
        "4",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["kind"] == "shards" and result["stats"]["train"]["examples"] > 0
    assert main(["--store", store.url, "lineage", result["id"]]) == 0
    tree = capsys.readouterr().out
    assert tree.index(result["id"]) < tree.index(f"corpus: {corpus_id}")
    assert f"tokenizer: {tokenizer_id}" in tree and "raw inputs (24 files)" in tree


def test_dask_cluster_gives_the_same_shards_as_the_process_pool(upstream, tmp_path):
    store, corpus_id, tokenizer_id = upstream
    params = {"corpus_id": corpus_id, "tokenizer_id": tokenizer_id, "config": CONFIG}
    pool_store = linked_store(tmp_path / "pool", store, corpus_id, tokenizer_id)
    by_pool = run_shard_flow(store_url=pool_store.url, **params)
    dask_store = linked_store(tmp_path / "dask", store, corpus_id, tokenizer_id)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, processes=True
    ) as cluster:
        by_dask = run_shard_flow(
            dask_address=cluster.scheduler_address, store_url=dask_store.url, **params
        )
    assert by_dask.id == by_pool.id and not by_dask.cached
    assert dask_store.require(by_dask.id).files == pool_store.require(by_pool.id).files

"""Shared fixtures: a real S3 endpoint on loopback, a real Prefect server, and a local store."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from prefect_server import PrefectServer

from bertflow.pipeline.core.store import ArtifactStore

# No telemetry from the test servers: there is no network, and its writes lock the test database.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run where CUDA is available and are skipped, saying so, elsewhere."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    for item in gpu:
        item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The S3 wire protocol, served by moto on 127.0.0.1 for the whole session; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point every AWS client at `s3_server`, make a fresh bucket, yield `s3://<bucket>/store`.

    botocore, under both boto3 and s3fs's aiobotocore, reads `AWS_ENDPOINT_URL` (and the
    service-specific `AWS_ENDPOINT_URL_S3`, which wins when both are set) each time a client is
    made, so these env vars are all s3fs 2026.9 needs. fsspec's own `FSSPEC_S3_ENDPOINT_URL` is no
    use here: fsspec reads `FSSPEC_*` only when it is first imported, long before a fixture runs.
    s3fs caches filesystem instances (with their clients), so the cache is cleared on both sides.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"bertflow-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/store"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real Prefect server for the session, for the tests that ask for it: this process and
    the processes it starts talk to it through PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = PrefectServer(tmp_path_factory.mktemp("prefect-server"))
    server.start()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        server.stop()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """An empty artifact store in a local temporary folder."""
    return ArtifactStore(str(tmp_path / "store"))


@dataclass(frozen=True)
class TinyShards:
    """demo-small ingested, a 2000-token vocabulary, and 64-token shards (4 train, 2 validation)."""

    store_url: str
    corpus_id: str
    tokenizer_id: str
    shards_id: str


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> TinyShards:
    from bertflow.pipeline.ingest.stage import IngestConfig, ingest
    from bertflow.pipeline.shards.stage import ShardConfig, make_shards
    from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer

    store = ArtifactStore(str(tmp_path_factory.mktemp("tiny") / "store"))
    corpus = ingest(store, IngestConfig(sources=["demo-small"], validation_fraction=0.1, workers=1))
    tokenizer = make_tokenizer(
        store, corpus.manifest.id, TokenizerConfig(vocab_size=2000, limit_alphabet=200)
    )
    shards = make_shards(
        store,
        corpus.manifest.id,
        tokenizer.manifest.id,
        ShardConfig(max_seq_len=64, num_shards=4, num_validation_shards=2, workers=1),
    )
    return TinyShards(store.url, corpus.manifest.id, tokenizer.manifest.id, shards.manifest.id)


def tiny_training(**changes: Any) -> Any:
    """A TrainConfig small and fast enough for tests on a CPU."""
    from bertflow.model.training.config import TrainConfig

    fields = dict(
        preset="tiny",
        max_steps=12,
        batch_size=16,
        lr=1e-3,
        warmup_steps=2,
        log_every=2,
        val_every=6,
        val_batches=4,
        checkpoint_every=6,
        num_workers=0,
        accelerator="cpu",
        devices="1",
    )
    return TrainConfig(**{**fields, **changes})


@pytest.fixture(scope="session")
def tiny_model(tiny_shards: TinyShards, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny model trained for 12 steps on `tiny_shards` (in this process); its artifact id."""
    from bertflow.model.training.plan import plan_pretrain
    from bertflow.model.training.train import train

    store = ArtifactStore(tiny_shards.store_url)
    plan = plan_pretrain(store, tiny_shards.shards_id, tiny_training())
    outcome = train(store, plan, tmp_path_factory.mktemp("run"))
    assert outcome.published is not None
    return outcome.published.manifest.id


@pytest.fixture
def training_config() -> Any:
    """`tiny_training`, the factory of small TrainConfigs, for tests to change a field or two."""
    return tiny_training


def tiny_pipeline(store_url: str, task_folder: Any, **changes: Any) -> Any:
    """A PipelineConfig that runs every stage in well under a minute on a CPU: demo-small, a
    2000-token vocabulary, 64-token shards, 12 training steps, one seed on a small task (written
    into `task_folder`)."""
    import json

    from bertflow.flows.pipeline_config import Phase, PipelineConfig
    from bertflow.model.evaluation.stage import EvaluateConfig
    from bertflow.model.evaluation.task_spec import TaskSpec
    from bertflow.pipeline.ingest.stage import IngestConfig
    from bertflow.pipeline.shards.stage import ShardConfig
    from bertflow.pipeline.tokenizer.stage import TokenizerConfig

    task = Path(task_folder) / "task.jsonl"
    with open(task, "w") as f:
        for i in range(60):
            words = "peace and hope" if i % 2 else "war and fear"
            f.write(json.dumps({"text": f"the nation saw {words} in {i}", "label": i % 2}) + "\n")
    fields = dict(
        store=store_url,
        ingest=IngestConfig(sources=["demo-small"], validation_fraction=0.1, workers=1),
        tokenizer=TokenizerConfig(vocab_size=2000, limit_alphabet=200),
        phases=[
            Phase(
                shard=ShardConfig(max_seq_len=64, num_shards=4, num_validation_shards=2, workers=1),
                pretrain=tiny_training(),
            )
        ],
        evaluate=EvaluateConfig(
            tasks=[TaskSpec(path=str(task))],
            seeds=1,
            epochs=1,
            batch_size=16,
            baselines=["tfidf"],
            device="cpu",
            intrinsic_max_batches=2,
            max_seq_len=32,
        ),
    )
    return PipelineConfig(**{**fields, **changes})


@pytest.fixture(scope="session")
def pipeline_config() -> Any:
    """`tiny_pipeline`, the factory of fast PipelineConfigs, for tests/flows and tests/ui."""
    return tiny_pipeline

"""Shared fixtures: a real S3 endpoint on loopback, a Prefect test server, and a local store."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import s3fs
from moto.server import ThreadedMotoServer

from bertflow.pipeline.store import ArtifactStore

# No telemetry from the test servers: there is no network, and its writes lock the test database.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


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
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for the session, for the tests that ask for it."""
    from prefect.testing.utilities import prefect_test_harness  # only sessions that need it pay

    with prefect_test_harness():
        yield


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """An empty artifact store in a local temporary folder."""
    return ArtifactStore(str(tmp_path / "store"))

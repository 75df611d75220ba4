"""Reading back what flows leave on the Prefect server, through Prefect's own client."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
    DeploymentFilter,
    DeploymentFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun
from prefect.client.schemas.responses import DeploymentResponse as Deployment
from prefect.client.schemas.sorting import ArtifactSort, LogSort
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent as Event
from prefect.exceptions import ObjectNotFound


def poll(check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """`check()` once it is truthy, or its last (falsy) value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


@contextlib.contextmanager
def bertflow_serve(folder: Path, config: Any, *options: str) -> Iterator[Path]:
    """`bertflow serve --config <config as YAML> OPTIONS` in its own process group, as a user
    runs it against PREFECT_API_URL, its runs' training folders under `folder`; yields the log
    once every deployment is registered, and stops it with Ctrl-C (then SIGKILL) at the end."""
    from bertflow.flows.pipeline_config import to_yaml

    path, log = folder / "served.yaml", folder / "serve.log"
    path.write_text(to_yaml(config))
    env = {
        **os.environ,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "BERTFLOW_RUNS": str(folder / "runs"),
    }
    argv = [sys.executable, "-m", "bertflow.flows.cli", "serve", "--config", str(path), *options]
    started = datetime.now(UTC)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        # Registered by this process: a deployment of the same name may be an earlier serve's.
        def registered() -> bool:
            last = PrefectRecords().deployment("evaluate/bertflow-evaluate")  # served last
            return last is not None and last.updated is not None and last.updated >= started

        assert poll(registered, 120), f"nothing was served:\n{log.read_text()[-3000:]}"
        yield log
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_run(flow_run_id: UUID, timeout_s: float) -> FlowRun | None:
    """The flow run once its state is final, or None after `timeout_s`."""
    with get_client(sync_client=True) as client:

        def final() -> FlowRun | None:
            run = client.read_flow_run(flow_run_id)
            return run if run.state and run.state.is_final() else None

        return poll(final, timeout_s, every_s=1.0)


class PrefectRecords:
    """What the server holds, read through Prefect's own client."""

    def artifacts(self, flow_run_id: UUID, kind: str) -> list[Artifact]:
        found = ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            type=ArtifactFilterType(any_=[kind]),
        )
        with get_client(sync_client=True) as client:
            return client.read_artifacts(artifact_filter=found)

    def keyed(self, key: str) -> Artifact | None:
        """The latest artifact with this key."""
        found = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        with get_client(sync_client=True) as client:
            latest = client.read_artifacts(
                artifact_filter=found, sort=ArtifactSort.CREATED_DESC, limit=1
            )
        return latest[0] if latest else None

    def logs(self, flow_run_id: UUID) -> list[str]:
        of_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=of_run, sort=LogSort.TIMESTAMP_ASC)
        return [entry.message for entry in logs]

    def deployment(self, name: str) -> Deployment | None:
        """The deployment `flow/deployment`, or None while it is not registered."""
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                return None

    def page(self, key: str) -> str | None:
        """The default UI's content page of the latest artifact with this key (a bertflow id),
        as the lineage links name it."""
        latest = self.keyed(key)
        return f"/v2/artifacts/artifact/{latest.id}" if latest else None

    def run(self, flow_run_id: UUID) -> FlowRun:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id)

    def materializations(self, key: str, timeout_s: float = 30.0) -> list[Event]:
        """The asset materialization events of `key` (a bertflow asset URI), once there are."""
        of_asset = EventFilter(
            event=EventNameFilter(prefix=["prefect.asset.materialization"]),
            resource=EventResourceFilter(id=[key]),
        )
        with get_client(sync_client=True) as client:
            return poll(lambda: client.read_events(filter=of_asset, limit=10).events, timeout_s)

    def runs_of(self, deployment_id: UUID) -> list[FlowRun]:
        of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(deployment_filter=of_deployment)

"""Reading back what flows leave on the Prefect server, through Prefect's own client."""

from __future__ import annotations

import time
from collections.abc import Callable
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
from prefect.client.schemas.sorting import ArtifactSort, LogSort


def poll(check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """`check()` once it is truthy, or its last (falsy) value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


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
        found = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                               type=ArtifactFilterType(any_=[kind]))  # fmt: skip
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

    def runs_of(self, deployment_id: UUID) -> list[FlowRun]:
        of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(deployment_filter=of_deployment)

"""What flows leave in Prefect, read back from the test server."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client


class PrefectRecords:
    """Raw filter requests: with fastapi<0.155 the server refuses the nulls that the client's own
    read methods send for the filters they leave unset."""

    def post(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        async def request() -> list[dict[str, Any]]:
            async with get_client() as client:
                response = await client.request("POST", path, json=body)
                return response.json()

        return asyncio.run(request())

    def artifacts(self, flow_run_id: UUID, kind: str) -> list[dict[str, Any]]:
        filters = {"flow_run_id": {"any_": [str(flow_run_id)]}, "type": {"any_": [kind]}}
        return self.post("/artifacts/filter", {"artifacts": filters})

    def keyed(self, key: str) -> dict[str, Any] | None:
        """The latest artifact with this key."""
        found = self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
        return max(found, key=lambda a: a["created"]) if found else None


@pytest.fixture
def prefect_records(prefect_harness: None) -> PrefectRecords:
    return PrefectRecords()

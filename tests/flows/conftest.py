"""What flows leave in Prefect, read back from the test server."""

from __future__ import annotations

from typing import Any

import pytest
from prefect_records import PrefectRecords


@pytest.fixture(scope="session")
def prefect_records(prefect_server: Any) -> PrefectRecords:
    return PrefectRecords()

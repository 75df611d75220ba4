"""A labelled toy task for tests that fine-tune: a JSON Lines file of short sentences whose label is
told by one word, learnable in an epoch by anything that reads."""

from __future__ import annotations

import json
from pathlib import Path


def write_toy_task(path: Path, rows: int) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {"text": f"the nation saw {'peace' if i % 2 else 'war'} in {i}", "label": i % 2}
            )
            + "\n"
            for i in range(rows)
        )
    )
    return path

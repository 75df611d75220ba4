"""Markdown every report is made of: tables, and an artifact's PNG shown inline."""

from __future__ import annotations

import base64

from bertflow.pipeline.core.store import ArtifactStore


def markdown_table(head: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A markdown table's lines: the first `text_columns` aligned left, numbers right."""
    rule = "|" + "---|" * text_columns + "---:|" * (len(head) - text_columns)
    return ["| " + " | ".join(head) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


def embedded_png(store: ArtifactStore, artifact_id: str, path: str, title: str) -> str:
    """A PNG of the artifact shown inline (the Prefect UI renders `data:image/` sources), with
    where the file lives for the viewers that do not."""
    with store.open(artifact_id, path) as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f"![{title}](data:image/png;base64,{data})\n\n{title}: `{store.uri(artifact_id, path)}`"

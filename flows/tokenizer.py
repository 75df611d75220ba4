"""The tokenizer flow: corpus -> WordPiece tokenizer artifact, cached by content."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from bertflow.flows.records import progress_callbacks
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.tokenizer.stage import (
    TokenizerConfig,
    build_and_publish,
    plan_tokenizer,
    tokenizer_markdown,
)


@flow(name="tokenizer")
def tokenizer_flow(
    corpus_id: str, config: TokenizerConfig | None = None, store_url: str | None = None
) -> StageResult:
    """Train (or import) a BERT WordPiece vocabulary on a corpus's train split."""
    config = config or TokenizerConfig()
    store = ArtifactStore(store_url)
    plan = plan_tokenizer(store, corpus_id, config)

    def build():
        callbacks = progress_callbacks(f"training a tokenizer on {corpus_id}")
        return build_and_publish(store, plan, callbacks, flow_run_id=flow_run.get_id())

    return cached_or_built(store, plan, "Tokenizer", build, details=tokenizer_markdown)

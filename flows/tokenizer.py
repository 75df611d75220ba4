"""The tokenizer flow: corpus -> WordPiece tokenizer artifact, cached by content."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from bertflow.flows.records import progress_callbacks
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.tokenizer.stage import TokenizerConfig, build_and_publish, plan_tokenizer


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

    return cached_or_built(store, plan, "Tokenizer", build, details=token_report)


def token_report(manifest: Manifest) -> str:
    """The most frequent validation tokens and a few validation sentences as they are split."""
    stats = manifest.stats
    lines = [
        "## Most frequent tokens on the validation split",
        "",
        "| token | count |",
        "|---|---:|",
    ]
    lines += [f"| `{token}` | {count:,} |" for token, count in stats.get("top_tokens", [])]
    lines += ["", "## Validation sentences as they are split", ""]
    for example in stats.get("examples", []):
        lines += [f"> {example['sentence']}", "", "`" + " ".join(example["tokens"]) + "`", ""]
    return "\n".join(lines)

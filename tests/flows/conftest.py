"""What flows leave in Prefect, read back from the test server."""

from __future__ import annotations

from typing import Any

import pytest
from prefect_records import PrefectRecords


@pytest.fixture(scope="session")
def prefect_records(prefect_server: Any) -> PrefectRecords:
    return PrefectRecords()


def tiny_pipeline(store_url: str, task_folder: Any, **changes: Any) -> Any:
    """A PipelineConfig that runs every stage in well under a minute on a CPU: demo-small, a
    2000-token vocabulary, 64-token shards, 12 training steps, one seed on a small task."""
    import json
    from pathlib import Path

    from bertflow.flows.pipeline_config import Phase, PipelineConfig
    from bertflow.model.evaluate import EvaluateConfig
    from bertflow.pipeline.downstream import TaskSpec
    from bertflow.pipeline.ingest import IngestConfig
    from bertflow.pipeline.shards import ShardConfig
    from bertflow.pipeline.tokenizer import TokenizerConfig

    task = Path(task_folder) / "task.jsonl"
    with open(task, "w") as f:
        for i in range(60):
            words = "peace and hope" if i % 2 else "war and fear"
            f.write(json.dumps({"text": f"the nation saw {words} in {i}", "label": i % 2}) + "\n")
    training = dict(
        preset="tiny", max_steps=12, batch_size=16, lr=1e-3, warmup_steps=2, log_every=2,
        val_every=6, val_batches=4, checkpoint_every=6, num_workers=0, accelerator="cpu",
        devices="1",
    )  # fmt: skip
    fields = dict(
        store=store_url,
        ingest=IngestConfig(sources=["demo-small"], validation_fraction=0.1, workers=1),
        tokenizer=TokenizerConfig(vocab_size=2000, limit_alphabet=200),
        phases=[Phase(shard=ShardConfig(max_seq_len=64, num_shards=4, num_validation_shards=2,
                                        workers=1),
                      pretrain=training)],
        evaluate=EvaluateConfig(tasks=[TaskSpec(path=str(task))], seeds=1, epochs=1,
                                batch_size=16, baselines=["tfidf"], device="cpu",
                                intrinsic_max_batches=2, max_seq_len=32),
    )  # fmt: skip
    return PipelineConfig(**{**fields, **changes})


@pytest.fixture(scope="session")
def pipeline_config() -> Any:
    """`tiny_pipeline`, the factory of fast PipelineConfigs."""
    return tiny_pipeline

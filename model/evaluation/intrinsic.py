"""Intrinsic metrics: how well a pretrained model does its own pretraining tasks on held-out data.

The validation shards of the model's own lineage are masked at 15% with the fixed seed that
training's validation uses (`VALIDATION_SEED`), in manifest order: masks depend only on the seed
and the example's index, so every model evaluated on the same shards sees the same masked
positions, whatever the batch size, and the numbers are comparable across models and runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bertflow.model.bert import BertForPreTraining
from bertflow.model.training.loader import ShardDataset, validation_config
from bertflow.model.training.module import heldout_metrics
from bertflow.model.training.plan import VALIDATION_SEED
from bertflow.pipeline.core.store import ArtifactStore


def validation_dataset(
    store: ArtifactStore, shards_id: str, batch_size: int
) -> ShardDataset | None:
    """The validation split at fixed masks, or None when the shards have no validation examples."""
    manifest = store.require(shards_id, kind="shards")
    if int(manifest.stats.get("validation", {}).get("examples", 0)) == 0:
        return None
    probe = ShardDataset(
        store.url, shards_id, "validation", validation_config(1), rank=0, world_size=1
    )
    batch = min(batch_size, probe.fewest_per_rank())
    config = validation_config(batch, VALIDATION_SEED)
    return ShardDataset(store.url, shards_id, "validation", config, rank=0, world_size=1)


def batch_count(dataset: ShardDataset, max_batches: int | None) -> int:
    total = -(-int(dataset.rows.sum()) // dataset.config.batch_size)
    return total if max_batches is None else min(total, max_batches)


@torch.no_grad()
def intrinsic_metrics(
    model: BertForPreTraining,
    dataset: ShardDataset,
    *,
    nsp: bool,
    device: torch.device,
    max_batches: int | None = None,
    on_batch: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """MLM loss (mean over masked tokens), MLM accuracy, perplexity = exp(MLM loss), NSP (or SOP)
    accuracy, and the number of examples, over the first `max_batches` batches (None: all)."""
    model.eval().to(device)
    loss_sum = correct = count = nsp_correct = examples = 0.0
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(
            batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["labels"]
        )
        logits = out.mlm_logits.float()
        loss_sum += float(F.cross_entropy(logits, out.mlm_targets, reduction="sum"))
        correct += float((logits.argmax(-1) == out.mlm_targets).sum())
        count += out.mlm_targets.numel()
        if nsp:
            labels = batch["next_sentence_label"]
            nsp_correct += float((out.nsp_logits.argmax(-1) == labels).sum())
        examples += batch["input_ids"].shape[0]
        on_batch()
    if not count:
        return {"examples": examples}
    metrics = heldout_metrics(loss_sum, correct, count, examples, nsp_correct if nsp else None)
    return {**metrics, "masked_tokens": count}

"""`EvaluateConfig`, how a model is evaluated: the `evaluate` stage's options, the pipeline's
`evaluate` form, and part of the evaluation id. Apart from `stage.py` so that building or
checking one (or showing an evaluation) needs no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertflow.model.bert_config import Pooling
from bertflow.model.evaluation.task_spec import TaskSpec

if TYPE_CHECKING:
    from bertflow.model.evaluation.finetune import FinetuneConfig

Baseline = Literal["tfidf", "random-init"]
DEFAULT_MAX_SEQ_LEN = 128


class EvaluateConfig(BaseModel):
    """How a model is evaluated. Every field but `device` shapes the evaluation's id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[TaskSpec] = Field(
        default_factory=list,
        description="Labelled tasks to fine-tune on (GLUE folders, CSV/TSV/JSONL/Parquet files).",
    )
    intrinsic: bool = Field(True, description="MLM/NSP metrics on the model's validation shards.")
    intrinsic_batch_size: int = Field(64, ge=1, description="Batch size of intrinsic metrics.")
    intrinsic_max_batches: int | None = Field(
        None, ge=1, description="Validation batches for intrinsic metrics (None: all)."
    )
    seeds: int | None = Field(
        None,
        ge=1,
        le=20,
        description="Fine-tuning runs per task, median reported; None: by the "
        "task's size, 5 under 10,000 training examples, 3 under 100,000, else 1. A task's own "
        "seeds= wins.",
    )
    seed: int = Field(0, description="First fine-tuning seed (runs use seed, seed+1, ...).")
    dev_fraction: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="Share of each task's training examples held out "
        "(seeded, stratified by class) to choose each run's best epoch; 0: keep the last epoch.",
    )
    baselines: list[Baseline] = Field(
        default_factory=lambda: ["tfidf", "random-init"],
        description="References on the same split: tfidf (TF-IDF + logistic/ridge regression), "
        "random-init (the same encoder fine-tuned without pretraining).",
    )
    epochs: int = Field(3, ge=1, le=100, description="Fine-tuning epochs.")
    lr: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Fine-tuning peak learning rate (default: 1e-3 at "
        "hidden size 128, scaled by (128/hidden)^2: 2.8e-5 for BERT-base, as its paper's range).",
    )
    batch_size: int = Field(32, ge=1, description="Fine-tuning batch size.")
    warmup_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of fine-tuning steps spent warming up."
    )
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW decay while fine-tuning.")
    pooling: Pooling = Field(
        "mean",
        description="What the classifier reads: mean (the last layer averaged over the "
        "real tokens) or cls (the pooled [CLS] output, HuggingFace's). Mean fine-tunes small "
        "pretrained encoders better: +0.03 on demo-era, +0.08 on SST-2 for the demo's model.",
    )
    max_seq_len: int | None = Field(
        None,
        ge=8,
        description="Longest fine-tuning input, longer ones truncated and counted "
        f"(default: {DEFAULT_MAX_SEQ_LEN}, or the length the model was pretrained at if shorter).",
    )
    max_train_examples: int | None = Field(
        None,
        ge=1,
        description="Fine-tune on a seeded sample of at most this many examples "
        "(the dev split included).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to run: auto picks a GPU when there is one."
    )

    @model_validator(mode="after")
    def _distinct(self) -> EvaluateConfig:
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines are listed twice: {self.baselines}")
        return self

    def identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"device"})

    def resolved_lr(self, hidden_size: int) -> float:
        """Small encoders fine-tune best at a higher rate than BERT-base's 2e-5..5e-5."""
        if self.lr is not None:
            return self.lr
        return float(f"{1e-3 * (128 / hidden_size) ** 2:.2g}")

    def finetune_config(self, hidden_size: int) -> FinetuneConfig:
        from bertflow.model.evaluation.finetune import (
            FinetuneConfig,  # torch: only where fine-tuning runs
        )

        return FinetuneConfig(
            lr=self.resolved_lr(hidden_size),
            epochs=self.epochs,
            batch_size=self.batch_size,
            warmup_fraction=self.warmup_fraction,
            weight_decay=self.weight_decay,
            pooling=self.pooling,
        )

    def task_seeds(self, task: TaskSpec, train_examples: int) -> list[int]:
        """The seeds a task is fine-tuned with: its own count, else this config's, else the
        default for `train_examples`."""
        count = task.seeds or self.seeds or default_seed_count(train_examples)
        return [self.seed + i for i in range(count)]


def default_seed_count(train_examples: int) -> int:
    """More seeds where fine-tuning is noisier: small tasks.

    MosaicBERT's GLUE fine-tuning (mosaicml/examples, benchmarks/bert/yamls/finetuning/glue/
    mosaic-bert-base-uncased.yaml) runs RTE, MRPC and STS-B (2.5k-5.7k training examples) with 5
    seeds, CoLA (8.5k) with 4, SST-2 (67k) with 3, and MNLI, QNLI and QQP (105k-393k) with one.
    These thresholds give the same counts, but 5 for CoLA.
    """
    if train_examples < 10_000:
        return 5
    if train_examples < 100_000:
        return 3
    return 1

"""`TrainConfig`, how a BERT is pretrained: the `pretrain` stage's options, the pipeline's
`phases.N.pretrain` form, and part of the model id. Apart from `train.py` so that building or
checking one needs no torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertflow.model.bert_config import BertConfig, preset
from bertflow.pipeline.core.literals import Schedule


class TrainConfig(BaseModel):
    """How a BERT is pretrained on a shards artifact. Fields other than the operational ones
    (logging and checkpoint cadence, compile, strategy, loader workers) shape the model id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["tiny", "mini", "small", "medium", "base", "large"] = Field(
        "tiny",
        description="Model size: tiny (2x128), mini (4x256), small (4x512), medium "
        "(8x512), base (12x768, BERT-base), large (24x1024).",
    )
    hidden_size: int | None = Field(None, ge=8, description="Override the preset's hidden size.")
    num_layers: int | None = Field(None, ge=1, description="Override the preset's layer count.")
    num_heads: int | None = Field(None, ge=1, description="Override the preset's head count.")
    intermediate_size: int | None = Field(
        None, ge=8, description="Override the preset's feed-forward width."
    )
    max_position_embeddings: int = Field(
        512, ge=8, description="Longest sequence the model takes (shards must fit)."
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Hidden and attention dropout.")
    init_from: str | None = Field(
        None, description="Start from this model artifact's weights (e.g. phase 2 at length 512)."
    )
    max_steps: int = Field(1000, ge=1, description="Optimizer steps to train.")
    batch_size: int = Field(32, ge=1, description="Examples per device per micro-batch.")
    accumulate: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-4, gt=0.0, le=1.0, description="Peak learning rate.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warm-up steps (default: 1% of max_steps, one-cycle: 30%)."
    )
    schedule: Schedule = Field(
        "linear", description="After warm-up: linear decay to 0 (BERT), or cosine annealing."
    )
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW decay (not on biases, norms).")
    adam_beta2: float = Field(0.999, gt=0.0, lt=1.0, description="AdamW beta2.")
    adam_eps: float = Field(1e-6, gt=0.0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0.0, description="Clip the gradient norm to this (0: off).")
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16-mixed on GPUs that support it, else 32-true."
    )
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="Where to train.")
    devices: str = Field(
        "auto", description="Devices per node: a count, a list like '0,1', or auto."
    )
    num_nodes: int = Field(1, ge=1, description="Nodes (each runs --devices processes).")
    strategy: Literal["auto", "ddp", "ddp_find_unused_parameters_true"] = Field(
        "auto", description="Lightning strategy; several devices use DDP."
    )
    compile: bool = Field(False, description="torch.compile the model.")
    seed: int = Field(0, description="Seed of initialisation, data order, masks and dropout.")
    num_workers: int = Field(1, ge=0, description="Loader worker processes per device.")
    mlm_prob: float | None = Field(
        None, gt=0.0, lt=1.0, description="Dynamic masking rate (default: the shards')."
    )
    log_every: int = Field(10, ge=1, description="Log metrics every N optimizer steps.")
    val_every: int = Field(500, ge=1, description="Validate every N optimizer steps.")
    val_batches: int | None = Field(
        50, ge=1, description="Validation batches per rank (None: the whole validation split)."
    )
    checkpoint_every: int = Field(500, ge=1, description="Checkpoint every N optimizer steps.")

    @model_validator(mode="after")
    def _architecture(self) -> TrainConfig:
        self.architecture(vocab_size=64)  # raises on, say, hidden_size not divisible by heads
        return self

    def architecture(self, vocab_size: int) -> BertConfig:
        changes = {
            k: v
            for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size")
            if (v := getattr(self, k)) is not None
        }
        try:
            return preset(
                self.preset,
                vocab_size=vocab_size,
                max_position_embeddings=self.max_position_embeddings,
                hidden_dropout=self.dropout,
                attention_dropout=self.dropout,
                **changes,
            )
        except ValueError as e:
            raise ValueError(str(e).replace("BertConfig.", "")) from None

    def identity(self) -> dict[str, Any]:
        operational = {"log_every", "checkpoint_every", "compile", "strategy", "num_workers"}
        return self.model_dump(mode="json", exclude=operational)

    def resolved_warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return 0 if self.schedule == "one-cycle" else max(1, round(0.01 * self.max_steps))

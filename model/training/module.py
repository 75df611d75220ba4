"""The Lightning module for BERT pretraining: losses, metrics, optimizer groups and schedules.

The model (`bert.py`) computes logits; everything about training lives here: MLM and NSP losses
and accuracies, AdamW with no decay on biases and LayerNorm, the learning-rate schedule, the
throughput and MFU bookkeeping, validation sums reduced over ranks, and the generator state that
makes a resumed run continue exactly where it stopped.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from bertflow.model.bert import BertConfig, BertForPreTraining, training_flops
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.loader import (
    LoaderConfig,
    Position,
    ShardDataset,
    ShardLoader,
    make_dataloader,
    validation_config,
)
from bertflow.pipeline.core.literals import Schedule
from bertflow.pipeline.core.store import ArtifactStore

# Dense bf16 tensor-core peak per GPU, FLOP/s, from the vendors' data sheets (the "with sparsity"
# figures are twice these). Matched against torch.cuda.get_device_name(), first match wins.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / HBM3
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)
PEAK_ENV = "BERTFLOW_PEAK_TFLOPS"
# Sums kept over a logging window (on the device: no host sync per step), reduced over ranks.
WINDOW = (
    "loss",
    "mlm_loss",
    "nsp_loss",
    "mlm_correct",
    "mlm_count",
    "nsp_correct",
    "examples",
    "batches",
    "tokens",
)


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak (`BERTFLOW_PEAK_TFLOPS` overrides); None on CPU or unknown."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    warmup_steps: int = 0
    max_steps: int = 1000
    schedule: Schedule = "linear"
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6

    @classmethod
    def of(cls, config: TrainConfig) -> OptimConfig:
        """The optimizer and schedule a training config asks for."""
        return cls(
            lr=config.lr,
            warmup_steps=config.resolved_warmup(),
            max_steps=config.max_steps,
            schedule=config.schedule,
            weight_decay=config.weight_decay,
            betas=(0.9, config.adam_beta2),
            eps=config.adam_eps,
        )


def heldout_metrics(
    loss_sum: float, correct: float, count: float, examples: float, nsp_correct: float | None
) -> dict[str, float]:
    """MLM loss, accuracy and perplexity over `count` masked tokens (and NSP accuracy over
    `examples` when `nsp_correct` is counted), from their sums: validation during training and
    the evaluation's intrinsic metrics alike."""
    mlm_loss = loss_sum / count
    metrics = {
        "mlm_loss": mlm_loss,
        "mlm_acc": correct / count,
        "perplexity": math.exp(min(mlm_loss, 50.0)),  # capped: an untrained model overflows
        "examples": examples,
    }
    if nsp_correct is not None:
        metrics["nsp_acc"] = nsp_correct / examples
    return metrics


def lr_factor(step: int, optim: OptimConfig) -> float:
    """Multiplier of the peak learning rate at `step`.

    linear: 0 -> 1 over the warm-up, then linearly down to 0 at max_steps (BERT's schedule).
    one-cycle: the same warm-up, then a cosine from 1 down to 0 at max_steps (the annealing half
    of the one-cycle policy; warm-up defaults to its 30% when none is given).
    """
    warmup = optim.warmup_steps
    if optim.schedule == "one-cycle" and warmup == 0:
        warmup = max(1, round(0.3 * optim.max_steps))
    if step < warmup:
        return (step + 1) / warmup
    remaining = max(1, optim.max_steps - warmup)
    progress = min(1.0, (step - warmup) / remaining)
    if optim.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on matrices; none on biases, LayerNorm weights (BERT's rule: 1-d tensors)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(
    model: torch.nn.Module, o: OptimConfig, device: torch.device, fused: bool = True
) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`, fused into one kernel where torch has one (CUDA, and the CPU
    since torch 2.4: a third of the for-loop's optimizer time on the tiny model), else (or when
    `fused` is off) over all tensors at once (foreach)."""
    fused = fused and device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        parameter_groups(model, o.weight_decay),
        lr=o.lr,
        betas=o.betas,
        eps=o.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


class PretrainingModule(L.LightningModule):
    """BERT pretraining: loss = MLM cross-entropy (+ NSP cross-entropy when the shards have it)."""

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        nsp: bool = True,
        compile: bool = False,
        log_every: int = 10,
    ):
        super().__init__()
        self.save_hyperparameters()  # plain dicts, so a checkpoint loads without our classes
        self.model_config = BertConfig(**model)
        self.optim = OptimConfig(**{**optim, "betas": tuple(optim.get("betas", (0.9, 0.999)))})
        self.nsp, self.log_every = nsp, log_every
        self.model = BertForPreTraining(self.model_config)
        # not a submodule: the compiled wrapper shares the model's parameters, and registering
        # it would save every weight twice
        object.__setattr__(self, "_compiled", torch.compile(self.model) if compile else None)
        self._reset_window()
        self._logged_step = 0
        self.last_logged: dict[str, float] = {}
        # every record logged (train windows, validations), in order: kept in checkpoints so a
        # resumed run's history is the uninterrupted run's
        self.history: list[dict[str, float]] = []
        self._validation: torch.Tensor | None = None

    # -- steps ----------------------------------------------------------------------------------

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = (self.model if self._compiled is None else self._compiled)(
            batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["labels"]
        )
        mlm_logits = out.mlm_logits.float()
        result = {
            "mlm_loss": F.cross_entropy(mlm_logits, out.mlm_targets),
            "mlm_correct": (mlm_logits.argmax(-1) == out.mlm_targets).sum(),
            "mlm_count": torch.tensor(out.mlm_targets.numel(), device=mlm_logits.device),
        }
        loss = result["mlm_loss"]
        if self.nsp:
            nsp_logits, nsp_labels = out.nsp_logits.float(), batch["next_sentence_label"]
            result["nsp_loss"] = F.cross_entropy(nsp_logits, nsp_labels)
            result["nsp_correct"] = (nsp_logits.argmax(-1) == nsp_labels).sum()
            loss = loss + result["nsp_loss"]
        result["loss"] = loss
        return result

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        r = self.losses(batch)
        lengths = batch["attention_mask"].sum(1)
        self._window += torch.stack(
            [
                r["loss"].detach(),
                r["mlm_loss"].detach(),
                r.get("nsp_loss", torch.zeros((), device=self.device)).detach(),
                r["mlm_correct"],
                r["mlm_count"],
                r.get("nsp_correct", torch.zeros((), device=self.device)),
                torch.tensor(lengths.shape[0], device=self.device),
                torch.ones((), device=self.device),
                lengths.sum(),
            ]
        ).to(torch.float64)
        self._flops += training_flops(self.model_config, lengths, int(r["mlm_count"]))
        return r["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        r = self.losses(batch)
        sums = torch.stack(
            [
                r["mlm_loss"].detach() * r["mlm_count"],
                r["mlm_correct"].to(torch.float64),
                r["mlm_count"].to(torch.float64),
                r.get("nsp_correct", torch.zeros((), device=self.device)).to(torch.float64),
                torch.tensor(batch["input_ids"].shape[0], device=self.device, dtype=torch.float64),
            ]
        ).to(torch.float64)
        self._validation = sums if self._validation is None else self._validation + sums

    def on_validation_epoch_start(self) -> None:
        self._validation = None

    def on_validation_epoch_end(self) -> None:
        sums = self._validation
        if sums is None:
            sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        if dist.is_available() and dist.is_initialized():
            sums = sums.clone()
            dist.all_reduce(sums)
        loss_sum, correct, count, nsp_correct, examples = sums.tolist()
        if not count:
            return
        nsp = nsp_correct if self.nsp else None
        scores = heldout_metrics(loss_sum, correct, count, examples, nsp)
        metrics = {f"val/{name}": value for name, value in scores.items()}
        for name, value in metrics.items():
            self.log(name, value, rank_zero_only=True)
        if not self.trainer.sanity_checking:
            self.history.append({"step": self.trainer.global_step, **metrics})

    # -- throughput -----------------------------------------------------------------------------

    def _reset_window(self) -> None:
        self._window = torch.zeros(len(WINDOW), dtype=torch.float64)
        self._flops, self._window_start = 0.0, time.perf_counter()

    def on_train_start(self) -> None:
        self._window = self._window.to(self.device)
        self._window_start, self._logged_step = time.perf_counter(), self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log_window()

    def log_window(self) -> None:
        """Every `log_every` optimizer steps, the window's means over all ranks: losses and
        accuracies, real (non-padding) tokens per second, and model FLOPs utilisation =
        training_flops / seconds / the device's dense bf16 peak (GPUs only). Once per step
        (a checkpoint taken at a logging step calls it first, so it holds that record)."""
        step = self.trainer.global_step
        last = step >= self.trainer.max_steps > 0  # the last window, however short, too
        if step == self._logged_step or (step % self.log_every and not last):
            return
        self._logged_step = step
        seconds = max(1e-9, time.perf_counter() - self._window_start)
        window = self._window.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(window)
        w = dict(zip(WINDOW, window.tolist(), strict=True))
        metrics = {
            "train/loss": w["loss"] / w["batches"],
            "train/mlm_loss": w["mlm_loss"] / w["batches"],
            "train/mlm_acc": w["mlm_correct"] / max(1.0, w["mlm_count"]),
            "train/lr": self.lr_schedulers().get_last_lr()[0],
            "train/tokens_per_s": w["tokens"] / seconds,
            "train/examples": w["examples"],
        }
        if self.nsp:
            metrics["train/nsp_loss"] = w["nsp_loss"] / w["batches"]
            metrics["train/nsp_acc"] = w["nsp_correct"] / max(1.0, w["examples"])
        peak = peak_flops(self.device)
        if peak:
            metrics["train/mfu"] = self._flops / seconds / peak
        for logger in self.loggers:  # directly: Lightning's own path re-logs a hook's values
            logger.log_metrics(metrics, step=step)
        self.last_logged = {"step": step, **metrics}
        self.history.append(self.last_logged)
        self._reset_window()
        self._window = self._window.to(self.device)

    def on_validation_start(self) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self) -> None:
        """Validation time is not training time: leave it out of the tokens/s window."""
        if self.trainer.training or self.trainer.state.fn == "fit":
            self._window_start += time.perf_counter() - self._validation_started

    # -- optimizer ------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        # Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer
        # (it unscales them itself): there the foreach one, next fastest, is used.
        mixed = "mixed" in str(self.trainer.precision)
        fused = not (mixed and self.trainer.gradient_clip_val)
        optimizer = adamw(self.model, o, self.device, fused=fused)
        scheduler = LambdaLR(optimizer, lambda step: lr_factor(step, o))
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # -- exact resume ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every rank's generator states (dropout), so a resumed run draws the same masks, and
        its logging window so far; the history of what was logged."""
        state = {
            "torch": torch.get_rng_state(),
            "window": self._window.cpu(),
            "window_flops": self._flops,
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if dist.is_available() and dist.is_initialized():
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        else:
            states = [state]
        checkpoint["bertflow_rng"] = states
        checkpoint["bertflow_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("bertflow_history", []))
        states = checkpoint.get("bertflow_rng")
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not states or rank >= len(states):
            return
        torch.set_rng_state(states[rank]["torch"])
        if "window" in states[rank]:
            self._window = states[rank]["window"].to(torch.float64)
            self._flops = float(states[rank]["window_flops"])
        if "cuda" in states[rank] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states[rank]["cuda"])


# -- data -----------------------------------------------------------------------------------------


class TrainingLoader(ShardLoader):
    """The train loader as Lightning sees it: Lightning fetches one batch ahead of the step it
    runs, so a checkpoint's position is one batch before the loader's own."""

    def state_dict(self) -> dict[str, Any]:
        position = self._live or self.dataset.position
        if position.batches:
            position = Position(position.epoch, position.batches - 1, position.num_workers)
        return self.dataset.state_at(position)


class ShardDataModule(L.LightningDataModule):
    """Train and validation loaders of a shards artifact, made once Lightning knows this
    process's rank (the distributed group does not exist yet when the trainer is built).

    Validation masks 15% with a fixed seed; its batch shrinks to what the smallest rank gets.
    Both loaders draw their worker seeds from their own generator, never the global one, so
    making a loader does not move the dropout stream (exact resume depends on it).
    """

    def __init__(
        self,
        store_url: str,
        shards_id: str,
        train: LoaderConfig,
        *,
        num_workers: int,
        pin_memory: bool,
        seed: int,
        validation_seed: int,
    ):
        super().__init__()
        self.store_url, self.shards_id, self.train = store_url, shards_id, train
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.seed, self.validation_seed = seed, validation_seed

    def _slot(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer else (0, 1)

    def train_dataloader(self) -> ShardLoader:
        rank, world = self._slot()
        dataset = ShardDataset(
            self.store_url, self.shards_id, "train", self.train, rank=rank, world_size=world
        )
        return self._loader(dataset, self.num_workers, TrainingLoader)

    def validation_dataset(self) -> ShardDataset | None:
        rank, world = self._slot()
        probe = (
            ShardDataset(
                self.store_url,
                self.shards_id,
                "validation",
                validation_config(1),
                rank=rank,
                world_size=world,
            )
            if self.has_validation()
            else None
        )
        batch = min(self.train.batch_size, probe.fewest_per_rank()) if probe else 0
        if batch < 1:
            return None
        config = validation_config(batch, self.validation_seed)
        return ShardDataset(
            self.store_url, self.shards_id, "validation", config, rank=rank, world_size=world
        )

    def has_validation(self) -> bool:
        manifest = ArtifactStore(self.store_url).require(self.shards_id)
        return int(manifest.stats.get("validation", {}).get("examples", 0)) > 0

    def val_dataloader(self) -> ShardLoader | list:
        dataset = self.validation_dataset()
        # In this process: a validation pass reads a few MB, and a worker spawned for each pass
        # (Prefect's threads rule out fork) cost more than the pass itself (8 of 10 s, demo).
        return [] if dataset is None else self._loader(dataset, 0)

    def _loader(
        self, dataset: ShardDataset, workers: int, cls: type[ShardLoader] = ShardLoader
    ) -> ShardLoader:
        loader = make_dataloader(dataset, workers, pin_memory=self.pin_memory, loader_class=cls)
        loader.generator = torch.Generator().manual_seed(self.seed)
        return loader

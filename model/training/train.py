"""The training entry point: shards -> `model` artifact, on one CPU, one GPU, or many (DDP).

`bertflow pretrain` (through Prefect) launches this module as a subprocess; users who launch
their own jobs run it directly, and every rank runs the same command:

    python -m bertflow.model.training --shards SHARDS_ID --devices 1 ...
    torchrun --nnodes 2 --nproc-per-node 8 ... -m bertflow.model.training --shards ID --devices 8 \
        --num-nodes 2 --strategy ddp
    srun python -m bertflow.model.training --shards ID --devices 8 --num-nodes 4   (SLURM)

Lightning reads the launcher's environment (torchrun's or SLURM's) to find each process's rank.
The run folder (`--run-dir`, default `~/.bertflow/runs/<model id>`) holds checkpoints and logs;
with several nodes it must be a shared filesystem. `--resume` continues from its last checkpoint.
When training reaches `max_steps`, global rank 0 exports the model and publishes the artifact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from pydantic import BaseModel

from bertflow.model.bert import load_hf_state_dict, parameter_count
from bertflow.model.export import artifact_files, read_export
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.launcher import PROGRESS_PREFIX, WATCH_PARENT_ENV, die_with_parent
from bertflow.model.training.module import OptimConfig, PretrainingModule, ShardDataModule
from bertflow.model.training.plan import (
    CHECKPOINT_DIR,
    INIT_FOLDER,
    LAST_CHECKPOINT,
    RUNS_ENV,
    VALIDATION_SEED,
    PretrainPlan,
    check_upstream,
    default_run_dir,
    plan_pretrain,
    train_loader_config,
)
from bertflow.model.training.report import ProgressPrinter, StepCheckpoint, publish_model
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.options import add_config_options, config_from_args
from bertflow.pipeline.core.store import ArtifactStore, Published


@dataclass
class TrainOutcome:
    completed: bool
    global_step: int
    published: Published | None


def train(
    store: ArtifactStore,
    plan: PretrainPlan,
    run_dir: Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    flow_run_id: str | None = None,
) -> TrainOutcome:
    """Train until max_steps (or until a callback stops it); rank 0 then publishes."""
    c = plan.config
    if os.environ.get("LOCAL_RANK", "0") == "0":  # once per node: its other ranks skip it
        check_upstream(store, plan)
    quiet_lightning_logs()
    L.seed_everything(c.seed, workers=True, verbose=False)
    module = PretrainingModule(
        asdict(plan.architecture),
        asdict(OptimConfig.of(c)),
        nsp=plan.shards.layout["objective"] != "none",
        compile=c.compile,
        log_every=c.log_every,
    )
    if c.init_from and not resume:
        load_weights(store, c.init_from, module.model)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = run_dir / CHECKPOINT_DIR
    last = checkpoints / LAST_CHECKPOINT
    data = ShardDataModule(
        store.url,
        plan.shards.id,
        train_loader_config(c),
        num_workers=c.num_workers,
        pin_memory=torch.cuda.is_available() and c.accelerator != "cpu",
        seed=c.seed,
        validation_seed=VALIDATION_SEED,
    )
    validates = data.has_validation()
    trainer = L.Trainer(
        accelerator=c.accelerator,
        devices=_devices(c.devices),
        num_nodes=c.num_nodes,
        strategy=c.strategy,
        precision=resolve_precision(c),
        max_steps=c.max_steps,
        accumulate_grad_batches=c.accumulate,
        gradient_clip_val=c.grad_clip or None,
        val_check_interval=c.val_every * c.accumulate,
        check_val_every_n_epoch=None,
        limit_val_batches=c.val_batches if c.val_batches is not None else 1.0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        use_distributed_sampler=False,
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        default_root_dir=run_dir,
        logger=TensorBoardLogger(run_dir / "logs", name="tensorboard", version=""),
        callbacks=[
            StepCheckpoint(last, c.checkpoint_every, c.val_every if validates else None),
            ProgressPrinter(c.max_steps),
            *callbacks,
        ],
    )
    ckpt_path = str(last) if resume and last.exists() else None
    started = time.monotonic()
    with _quiet_warnings():
        # weights_only: a checkpoint is tensors and plain containers; anything else is refused
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    completed = trainer.global_step >= c.max_steps
    if not completed:
        return TrainOutcome(False, trainer.global_step, None)
    trainer.save_checkpoint(last, weights_only=False)  # the whole state: --resume needs it
    final = {}
    if validates:
        with _quiet_warnings():
            results = trainer.validate(module, datamodule=data, verbose=False)
        final = {k.removeprefix("val/"): float(v) for k, v in (results or [{}])[0].items()}
    if trainer.global_rank != 0:
        return TrainOutcome(True, trainer.global_step, None)
    published = publish_model(
        store,
        plan,
        run_dir,
        module,
        final_validation=final,
        seconds=time.monotonic() - started,
        flow_run_id=flow_run_id,
        parameters=parameter_count(module.model),
        device=_device_name(module.device),
        precision=str(trainer.precision),
    )
    return TrainOutcome(True, trainer.global_step, published)


def resolve_precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    gpu = config.accelerator != "cpu" and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def _devices(devices: str) -> int | str | list[int]:
    devices = devices.strip()
    if devices == "auto":
        return "auto"
    if "," in devices:
        return [int(d) for d in devices.split(",") if d.strip()]
    return int(devices)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    """Silence Lightning's advice that does not apply (iterable loaders have no length), and a
    deprecation inside Lightning that only its next release can fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        yield


class LightningChatter(logging.Filter):
    """Drops the lines Lightning logs that say nothing about this run, so the training log (in
    the terminal and the Prefect run) is the run's own: hardware it does not use, tips to
    install Lightning's cloud products, and the stop at max_steps that our progress shows."""

    NOISE = (
        "GPU available:",
        "TPU available:",
        "HPU available:",
        "💡 Tip:",
        "`Trainer.fit` stopped:",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_lightning_logs() -> None:
    chatter = LightningChatter()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, LightningChatter) for f in logger.filters):
            logger.addFilter(chatter)


def load_weights(store: ArtifactStore, model_id: str, model: torch.nn.Module) -> None:
    """Initialise from a model artifact's exported weights (positions beyond theirs stay new)."""
    _, state = read_export(artifact_files(store, model_id, INIT_FOLDER))
    name = "bert.embeddings.position_embeddings.weight"
    own = model.state_dict()[name]
    if state[name].shape[0] < own.shape[0]:
        grown = own.clone()
        grown[: state[name].shape[0]] = state[name]
        state[name] = grown
    load_hf_state_dict(model, state)


# -- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bertflow.model.training",
        description="Pretrain BERT on a shards artifact (every rank runs this same command).",
    )
    parser.add_argument("--shards", required=True, metavar="SHARDS_ID")
    parser.add_argument("--store", default=None, help="artifact store (default: $BERTFLOW_STORE)")
    parser.add_argument("--run-dir", type=Path, help=f"checkpoints and logs (${RUNS_ENV}/<id>)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--config-json", help="the TrainConfig as JSON (other options override)")
    parser.add_argument("--flow-run-id", help=argparse.SUPPRESS)
    add_config_options(parser, TrainConfig)
    args = parser.parse_args(argv)
    if os.environ.get(WATCH_PARENT_ENV):
        die_with_parent()
    given = json.loads(args.config_json) if args.config_json else {}
    config = config_from_args(TrainConfig, args, **{**given, **_explicit(args, TrainConfig)})
    store = ArtifactStore(args.store)
    try:
        plan = plan_pretrain(store, args.shards, config)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = args.run_dir or default_run_dir(store, plan.artifact_id)
    outcome = train(store, plan, run_dir, resume=args.resume, flow_run_id=args.flow_run_id)
    if outcome.published is not None:
        print(
            PROGRESS_PREFIX + json.dumps({"published": outcome.published.manifest.id}), flush=True
        )
    return 0 if outcome.completed else 1


def _explicit(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in model.model_fields if hasattr(args, k)}

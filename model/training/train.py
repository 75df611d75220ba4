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
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from bertflow.model.bert import BertConfig, parameter_count
from bertflow.model.training.config import TrainConfig  # re-exported: importers keep this path
from bertflow.model.training.loader import LoaderConfig, ShardDataset
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.manifest import Manifest, artifact_id
from bertflow.pipeline.core.store import ArtifactStore, Published

RUNS_ENV = "BERTFLOW_RUNS"
PROGRESS_PREFIX = "bertflow-progress "  # stdout lines the Prefect task turns into progress
WATCH_PARENT_ENV = "BERTFLOW_WATCH_PARENT"
CHECKPOINT_DIR, LAST_CHECKPOINT = "checkpoints", "last.ckpt"
RUNS_DIR = ".runs"  # in a local store: training run folders, beside the artifacts
VALIDATION_SEED = 2024  # fixed masking seed of validation, the same for every model
INIT_FOLDER = "hf"  # the export that --init-from reads of a model artifact
INIT_FILES = (f"{INIT_FOLDER}/config.json", f"{INIT_FOLDER}/model.safetensors")


@dataclass(frozen=True)
class PretrainPlan:
    config: TrainConfig
    shards: Manifest
    tokenizer_id: str
    architecture: BertConfig
    world_size: int
    artifact_id: str

    @property
    def upstream(self) -> dict[str, str]:
        up = {"shards": self.shards.id}
        if self.config.init_from:
            up["init"] = self.config.init_from
        return up


def plan_pretrain(store: ArtifactStore, shards_id: str, config: TrainConfig) -> PretrainPlan:
    """Check everything that can be checked before training starts, and name the artifact."""
    shards = store.require(shards_id, kind="shards")
    tokenizer_id = shards.upstream["tokenizer"]
    layout = shards.layout
    architecture = config.architecture(int(layout["vocab_size"]))
    if layout["max_seq_len"] > architecture.max_position_embeddings:
        raise InputError(
            f"{shards_id} holds sequences of up to {layout['max_seq_len']} tokens, more than the "
            f"model's max_position_embeddings ({architecture.max_position_embeddings}); raise "
            f"--max-position-embeddings or shard with --max-seq-len "
            f"{architecture.max_position_embeddings}"
        )
    if config.init_from:
        _check_init(store, config.init_from, tokenizer_id, architecture)
    world_size = resolve_world_size(config)
    _check_batch(store, shards_id, config, world_size)
    model_id = artifact_id(
        "model",
        config={
            "train": config.identity(),
            "architecture": asdict(architecture),
            "world_size": world_size,
        },
        upstream={"shards": shards_id, **({"init": config.init_from} if config.init_from else {})},
    )
    return PretrainPlan(config, shards, tokenizer_id, architecture, world_size, model_id)


def _check_init(
    store: ArtifactStore, model_id: str, tokenizer_id: str, architecture: BertConfig
) -> None:
    init = store.require(model_id, kind="model")
    init_tokenizer = init.layout.get("tokenizer")
    if init_tokenizer != tokenizer_id:
        raise InputError(
            f"--init-from {model_id} was trained with tokenizer {init_tokenizer}, but these "
            f"shards were made with tokenizer {tokenizer_id}: token ids would mean different "
            f"words; shard the corpus with {init_tokenizer}"
        )
    theirs = BertConfig(**init.layout["architecture"])
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size"):
        if getattr(theirs, name) != getattr(architecture, name):
            raise InputError(
                f"--init-from {model_id} has {name} {getattr(theirs, name)}, this model "
                f"{getattr(architecture, name)}: use the same preset and sizes"
            )
    if theirs.max_position_embeddings > architecture.max_position_embeddings:
        raise InputError(
            f"--init-from {model_id} has {theirs.max_position_embeddings} positions; "
            f"--max-position-embeddings must be at least that"
        )


def resolve_world_size(config: TrainConfig) -> int:
    """Processes that will train: devices per node x nodes (auto: all GPUs, else 1 CPU)."""
    devices = config.devices.strip()
    gpu = config.accelerator == "gpu" or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )
    if devices in ("auto", "-1"):
        per_node = torch.cuda.device_count() if gpu else 1
    elif "," in devices:
        per_node = len([d for d in devices.split(",") if d.strip()])
    else:
        try:
            per_node = int(devices)
        except ValueError:
            raise InputError(f"--devices {config.devices!r}: a count, a list or auto") from None
        if per_node < 1:
            raise InputError(f"--devices {config.devices!r}: must be at least 1")
    return max(1, per_node) * config.num_nodes


def _check_batch(store: ArtifactStore, shards_id: str, config: TrainConfig, world: int) -> None:
    try:
        ShardDataset(
            store.url, shards_id, "train", _train_loader_config(config), rank=0, world_size=world
        )
    except ValueError as e:
        raise InputError(f"--batch-size: {e}") from None


def _train_loader_config(config: TrainConfig) -> LoaderConfig:
    return LoaderConfig(
        batch_size=config.batch_size,
        seed=config.seed,
        epochs=None,  # endless: training runs by max_steps
        masking="dynamic" if config.mlm_prob is not None else None,
        mlm_prob=config.mlm_prob,
    )


# -- training ------------------------------------------------------------------------------------


def default_run_dir(store: ArtifactStore, model_id: str) -> Path:
    """Where a training run keeps its checkpoints and logs until its model is published:
    `$BERTFLOW_RUNS/<id>` when that is set; else beside a local store's artifacts
    (`<store>/.runs/<id>`), so one store is one place; else, for an object store,
    `~/.bertflow/runs/<id>` (checkpoints are written to a filesystem)."""
    if root := os.environ.get(RUNS_ENV):
        return Path(root).expanduser() / model_id
    if store.is_local:
        return Path(store.root) / RUNS_DIR / model_id
    return Path.home() / ".bertflow" / "runs" / model_id


def clear_run(run_dir: Path, published: bool) -> str:
    """Clear what a training run leaves in its folder, and say what was done. Once the model is
    published its artifact holds the logs and the last checkpoint, so nothing is kept; after a
    failure or a cancel the checkpoints and logs stay for `--resume` when a checkpoint was
    written, and go when none was (there is nothing to resume). Only the run's own files are
    touched, so a `--run-dir` that holds other things keeps them."""
    checkpoints = run_dir / CHECKPOINT_DIR
    if not published and any(checkpoints.glob("*.ckpt")):
        return f"kept {run_dir} for --resume (delete it to start over)"
    for own in (checkpoints, run_dir / "logs"):
        shutil.rmtree(own, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only when nothing else is in it
    return f"removed the run folder {run_dir}" + ("" if published else " (no checkpoint)")


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
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from bertflow.model.training.module import OptimConfig, PretrainingModule, ShardDataModule
    from bertflow.model.training.report import ProgressPrinter, StepCheckpoint, publish_model

    c = plan.config
    if os.environ.get("LOCAL_RANK", "0") == "0":  # once per node: its other ranks skip it
        check_upstream(store, plan)
    quiet_lightning_logs()
    L.seed_everything(c.seed, workers=True, verbose=False)
    optim = OptimConfig(
        lr=c.lr,
        warmup_steps=c.resolved_warmup(),
        max_steps=c.max_steps,
        schedule=c.schedule,
        weight_decay=c.weight_decay,
        betas=(0.9, c.adam_beta2),
        eps=c.adam_eps,
    )
    module = PretrainingModule(
        asdict(plan.architecture),
        asdict(optim),
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
        _train_loader_config(c),
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


def check_upstream(store: ArtifactStore, plan: PretrainPlan) -> None:
    """Every file training reads, checked against its manifest before the first step: the
    shards (both splits and the vocabulary) and, when training continues a model, its weights."""
    store.check_intact(plan.shards)
    if plan.config.init_from:
        store.check_intact(store.require(plan.config.init_from, "model"), INIT_FILES)


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
    import warnings

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
    from bertflow.model.bert import load_hf_state_dict
    from bertflow.model.export import artifact_files, read_export

    _, state = read_export(artifact_files(store, model_id, INIT_FOLDER))
    name = "bert.embeddings.position_embeddings.weight"
    own = model.state_dict()[name]
    if state[name].shape[0] < own.shape[0]:
        grown = own.clone()
        grown[: state[name].shape[0]] = state[name]
        state[name] = grown
    load_hf_state_dict(model, state)


# -- process hygiene ------------------------------------------------------------------------------


def die_with_parent() -> None:
    """When launched by the Prefect task: if that process goes away (killed, even by SIGKILL),
    take this whole process group (all local ranks and loader workers) down with it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="bertflow-parent-watch", daemon=True).start()


# -- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from bertflow.pipeline.core.options import add_config_options, config_from_args

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

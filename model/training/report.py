"""What a training run reports and leaves behind: progress lines while it runs, and at the end
the `model` artifact (checkpoint, HuggingFace export with its model card, logs, loss curve, final
metrics)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from bertflow.model.export import TOKENIZER_FILES, export_hf
from bertflow.model.model_card import MODEL_CARD_FILE, ModelFacts, render_model_card
from bertflow.model.training.history import METRICS_CSV, plot_losses, write_history
from bertflow.model.training.launcher import PROGRESS_PREFIX
from bertflow.model.training.module import PretrainingModule
from bertflow.model.training.plan import PretrainPlan
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.markdown import embedded_png
from bertflow.pipeline.core.store import ArtifactStore, Published


class ProgressPrinter(L.Callback):
    """On global rank 0, after each logging window: one readable line and one JSON line
    (`PROGRESS_PREFIX` + {step, max_steps, metrics}) that the Prefect task turns into progress."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps
        self._printed_step = -1
        self._started = time.monotonic()

    # Callbacks' on_train_batch_end run before the module's, which logs the window: print it at
    # the next hook that comes after (next batch, validation, the end of training).
    def on_train_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self._print_window(trainer, module)

    def on_validation_start(self, trainer: L.Trainer, module: Any) -> None:
        self._print_window(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        self._print_window(trainer, module)

    def _print_window(self, trainer: L.Trainer, module: Any) -> None:
        logged = getattr(module, "last_logged", {})
        step = int(logged.get("step", -1))
        if trainer.global_rank != 0 or step <= self._printed_step:
            return
        self._printed_step = step
        metrics = {k.removeprefix("train/"): v for k, v in logged.items() if k != "step"}
        parts = [f"step {step}/{self.max_steps}"]
        parts += [f"{k} {_fmt(v)}" for k, v in metrics.items() if k != "examples"]
        print(" · ".join(parts), flush=True)
        record = {
            "step": step,
            "max_steps": self.max_steps,
            "metrics": metrics,
            "elapsed_s": round(time.monotonic() - self._started, 1),
        }
        print(PROGRESS_PREFIX + json.dumps(record), flush=True)

    def on_validation_end(self, trainer: L.Trainer, module: Any) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if val:
            line = " · ".join(f"{k} {_fmt(v)}" for k, v in sorted(val.items()))
            print(f"validation at step {trainer.global_step}: {line}", flush=True)
            sys.stdout.flush()


class StepCheckpoint(Checkpoint):
    """`path` (the whole training state, for --resume) every `every` optimizer steps, written to
    a temporary file and renamed, so a crash mid-write leaves the previous one. At a step that
    also validates (`val_every`), it is written after the validation, so the history it holds
    has that validation in it, as an uninterrupted run's does."""

    def __init__(self, path: Path, every: int, val_every: int | None):
        self.path, self.every, self.val_every = path, every, val_every

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        step = trainer.global_step
        validates = self.val_every is not None and step % self.val_every == 0
        if step % self.every == 0 and not validates and step < trainer.max_steps:
            module.log_window()  # callbacks run before the module's own hook
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, module: Any) -> None:
        step = trainer.global_step
        fitting = trainer.state.fn == "fit" and not trainer.sanity_checking
        if fitting and step % self.every == 0 and step < trainer.max_steps:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier("bertflow-checkpoint")


def _fmt(value: float) -> str:
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    if value and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}"


def publish_model(
    store: ArtifactStore,
    plan: PretrainPlan,
    run_dir: Path,
    module: PretrainingModule,
    *,
    final_validation: dict[str, float],
    seconds: float,
    parameters: int,
    device: str,
    precision: str,
    flow_run_id: str | None = None,
) -> Published:
    """Stage the run's outputs and publish them as the `model` artifact."""
    with store.staging(plan.artifact_id) as staging:
        shutil.copytree(run_dir / "logs", staging / "logs")
        (staging / "checkpoint").mkdir()
        shutil.copyfile(run_dir / "checkpoints" / "last.ckpt", staging / "checkpoint/last.ckpt")
        tokenizer_dir = staging / ".tokenizer"
        tokenizer_dir.mkdir()
        for name in TOKENIZER_FILES:
            with store.open(plan.tokenizer_id, name) as src:
                (tokenizer_dir / name).write_bytes(src.read())
        model = module.model.to("cpu").float()
        export_hf(model, tokenizer_dir, staging / "hf")
        shutil.rmtree(tokenizer_dir)
        history = module.history
        write_history(history, staging / METRICS_CSV)
        plot_losses(history, staging / "loss.png", title=plan.artifact_id)
        stats = _stats(plan, history, final_validation, seconds, parameters, device, precision)
        (staging / "metrics.json").write_text(json.dumps(stats, indent=2) + "\n")
        config = plan.config.model_dump(mode="json")
        layout = {
            "architecture": asdict(plan.architecture),
            "tokenizer": plan.tokenizer_id,
            "checkpoint": "checkpoint/last.ckpt",
            "hf": "hf",
            "logs": "logs",
            "loss_curve": "loss.png",
            "objective": plan.shards.layout["objective"],
            "max_seq_len": plan.shards.layout["max_seq_len"],
        }
        # Rendered before publishing, so without an evaluation; `bertflow export` adds the latest.
        facts = ModelFacts(plan.artifact_id, config, plan.upstream, layout, stats)
        (staging / "hf" / MODEL_CARD_FILE).write_text(render_model_card(store, facts))
        return store.publish(
            staging,
            plan.artifact_id,
            config=config,
            upstream=plan.upstream,
            stats=stats,
            layout=layout,
            summary=model_summary(layout, stats),
            flow_run_id=flow_run_id,
        )


def model_summary(layout: dict[str, Any], stats: dict[str, Any]) -> str:
    """One line on a model: its shape and size, its training, its validation scores."""
    arch, val = layout.get("architecture", {}), stats.get("validation", {})
    scores = (
        f"validation MLM loss {val['mlm_loss']:.3f}, accuracy {val['mlm_acc']:.1%}"
        if ("mlm_loss" in val)
        else "no validation"
    )
    if "nsp_acc" in val:
        scores += f", NSP accuracy {val['nsp_acc']:.1%}"
    return (
        f"BERT {arch.get('num_layers')}x{arch.get('hidden_size')}"
        f" ({stats.get('parameters', 0) / 1e6:.1f}M parameters), {stats.get('steps', 0):,}"
        f" steps at batch {stats.get('global_batch')}; {scores}"
    )


def _stats(
    plan: PretrainPlan,
    history: list[dict[str, float]],
    final_validation: dict[str, float],
    seconds: float,
    parameters: int,
    device: str,
    precision: str,
) -> dict[str, Any]:
    train_rows = [r for r in history if "train/loss" in r]
    last = train_rows[-1] if train_rows else {}
    rates = [r["train/tokens_per_s"] for r in train_rows[1:] if "train/tokens_per_s" in r]
    c = plan.config
    stats: dict[str, Any] = {
        "steps": c.max_steps,
        "parameters": parameters,
        "world_size": plan.world_size,
        "global_batch": c.batch_size * c.accumulate * plan.world_size,
        "examples_seen": int(sum(r.get("train/examples", 0) for r in train_rows)),
        "train_loss": last.get("train/loss"),
        "train_mlm_acc": last.get("train/mlm_acc"),
        "first_train_loss": train_rows[0]["train/loss"] if train_rows else None,
        "validation": final_validation,
        "tokens_per_s": round(sorted(rates)[len(rates) // 2], 1) if rates else None,
        "seconds": round(seconds, 1),
        "device": device,
        "precision": precision,
    }
    mfu = [r["train/mfu"] for r in train_rows[1:] if "train/mfu" in r]
    if mfu:
        stats["mfu"] = round(sorted(mfu)[len(mfu) // 2], 4)
    return stats


def model_markdown(store: ArtifactStore, manifest: Manifest) -> str:
    """The model's section of its Prefect record: shape, training, validation, loss curve."""
    s, arch = manifest.stats, manifest.layout["architecture"]
    val = s.get("validation", {})
    lines = [
        "## Model",
        "",
        f"{arch['num_layers']} layers x {arch['hidden_size']} hidden, {arch['num_heads']} heads, "
        f"{s['parameters']:,} parameters, vocabulary {arch['vocab_size']:,}; trained "
        f"{s['steps']:,} steps at global batch {s['global_batch']} on {s['world_size']} x "
        f"{s['device']} ({s['precision']}), {s['seconds']:,} s.",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| train loss (first -> last window) | {s['first_train_loss']:.4f} -> "
        f"{s['train_loss']:.4f} |",
    ]
    for key in ("mlm_loss", "mlm_acc", "perplexity", "nsp_acc", "examples"):
        if key in val:
            lines.append(f"| validation {key} | {val[key]:.4f} |")
    if s.get("tokens_per_s"):
        lines.append(f"| tokens/s (median window) | {s['tokens_per_s']:,.0f} |")
    if s.get("mfu"):
        lines.append(f"| MFU (median window) | {s['mfu']:.1%} |")
    layout = manifest.layout
    lines += [
        "",
        embedded_png(store, manifest.id, layout["loss_curve"], "Loss curve"),
        "",
        f"HuggingFace export: `{store.uri(manifest.id, layout['hf'])}/` "
        f"(`bertflow export {manifest.id} --out DIR`).",
    ]
    return "\n".join(lines)

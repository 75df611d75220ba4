"""Pretraining on CPU, tiny preset: learning, exact resume, DDP, config errors, schedules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
from pydantic import ValidationError

from bertflow.model.bert import BertForPreTraining, tiny
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.history import METRICS_CSV as METRICS
from bertflow.model.training.history import read_history
from bertflow.model.training.module import OptimConfig, lr_factor, parameter_groups
from bertflow.model.training.plan import plan_pretrain
from bertflow.model.training.train import train
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.store import ArtifactStore


class Losses(L.Callback):
    """The loss of every optimizer step, by global step."""

    def __init__(self) -> None:
        self.by_step: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.by_step[trainer.global_step] = float(outputs["loss"])


class StopAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_loss_falls_and_the_artifact_holds_what_it_says(tiny_shards, tiny_model):
    store = ArtifactStore(tiny_shards.store_url)
    m = store.require(tiny_model)
    assert m.upstream == {"shards": tiny_shards.shards_id}
    assert m.layout["tokenizer"] == tiny_shards.tokenizer_id
    history = read_history(store.local_path(tiny_model) / "logs/metrics.csv")
    train_losses = [r["train/loss"] for r in history if "train/loss" in r]
    val_losses = [r["val/mlm_loss"] for r in history if "val/mlm_loss" in r]
    assert len(train_losses) == 6  # every 2 of 12 steps
    assert train_losses[-1] < train_losses[0] - 0.5
    assert val_losses[-1] < val_losses[0]
    stats = m.stats
    assert stats["steps"] == 12 and stats["global_batch"] == 16
    assert stats["examples_seen"] == 12 * 16
    assert 0 < stats["validation"]["mlm_acc"] < 1 and stats["validation"]["examples"] > 0
    assert stats["validation"]["perplexity"] == pytest.approx(
        float(torch.tensor(stats["validation"]["mlm_loss"]).exp()), rel=1e-4
    )
    assert stats["tokens_per_s"] > 0 and "mfu" not in stats  # no MFU on a CPU
    files = {f.path for f in m.files}
    assert {"checkpoint/last.ckpt", "hf/model.safetensors", "loss.png", "metrics.json"} <= files
    assert (store.local_path(tiny_model) / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert store.verify(tiny_model) == []


def test_resumed_run_equals_the_uninterrupted_run_exactly(tiny_shards, training_config, tmp_path):
    """fp32 on CPU with dropout on: the optimizer, scheduler, generator and loader position all
    come back, so every loss after the resume and the final weights are bit-identical; and the
    history does too (the logging window the checkpoint cut, the validation at the checkpoint's
    step), so both artifacts' records are equal but for the timings."""
    config = training_config(max_steps=10, log_every=3, checkpoint_every=4, val_every=4, seed=5)
    stores = {}
    for run in ("straight", "resumed"):
        shutil.copytree(tiny_shards.store_url, tmp_path / run / "store")
        stores[run] = ArtifactStore(str(tmp_path / run / "store"))
    plans = {
        run: plan_pretrain(store, tiny_shards.shards_id, config) for run, store in stores.items()
    }

    straight = Losses()
    done = train(
        stores["straight"], plans["straight"], tmp_path / "straight/run", callbacks=[straight]
    )

    first, second = Losses(), Losses()
    run_dir = tmp_path / "resumed/run"
    stopped = train(stores["resumed"], plans["resumed"], run_dir, callbacks=[first, StopAt(6)])
    assert not stopped.completed and stopped.global_step == 6 and stopped.published is None
    resumed = train(stores["resumed"], plans["resumed"], run_dir, resume=True, callbacks=[second])
    assert resumed.completed and min(second.by_step) == 5  # from the checkpoint at step 4

    assert {**first.by_step, **second.by_step} == straight.by_step
    weights = [
        torch.load(tmp_path / run / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
        for run in ("straight", "resumed")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    folders = [done.published.manifest, resumed.published.manifest]
    records = [stores[run].local_path(m.id) for run, m in zip(stores, folders, strict=True)]
    timing = {"train/tokens_per_s", "train/mfu"}
    histories = [
        [{k: v for k, v in r.items() if k not in timing} for r in read_history(f / METRICS)]
        for f in records
    ]
    assert [r["step"] for r in histories[0] if "val/mlm_loss" in r][:2] == [4, 8]
    assert histories[0] == histories[1]
    stats = [json.loads((folder / "metrics.json").read_text()) for folder in records]
    for s in stats:
        for key in ("seconds", "tokens_per_s", "mfu"):
            s.pop(key, None)
    assert stats[0] == stats[1] and stats[0]["examples_seen"] == 10 * 16


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import lightning as L
    from bertflow.model.training.config import TrainConfig
    from bertflow.model.training.plan import plan_pretrain
    from bertflow.model.training.train import train
    from bertflow.pipeline.core.store import ArtifactStore

    class Seen(L.Callback):
        examples = []
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.examples += batch["example_index"].tolist()

    store_url, shards_id, config_json, run_dir, out = sys.argv[1:]
    store = ArtifactStore(store_url)
    plan = plan_pretrain(store, shards_id, TrainConfig.model_validate_json(config_json))
    seen = Seen()
    outcome = train(store, plan, Path(run_dir), callbacks=[seen])
    published = outcome.published.manifest.id if outcome.published else None
    record = {"examples": seen.examples, "published": published, "world": plan.world_size}
    Path(out, f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    """
)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_on_disjoint_data(tiny_shards, training_config, tmp_path):
    """torchrun, 2 processes, gloo: each rank reads its own examples; rank 0 publishes."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    config = training_config(devices="2", strategy="ddp", max_steps=4, val_every=2, seed=11)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        tiny_shards.store_url,
        tiny_shards.shards_id,
        config.model_dump_json(),
        str(tmp_path / "run"),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    seen = [set(r["examples"]) for r in ranks]
    assert all(len(r["examples"]) == 4 * 16 for r in ranks)  # 4 steps of 16, no repeats
    assert all(len(s) == 4 * 16 for s in seen)
    assert not seen[0] & seen[1]
    assert ranks[0]["published"] and ranks[1]["published"] is None
    model = ArtifactStore(tiny_shards.store_url).require(ranks[0]["published"])
    assert model.stats["world_size"] == 2 and model.stats["global_batch"] == 32


# -- configuration errors, before any work ---------------------------------------------------------


def test_batch_larger_than_a_rank_gets_is_refused(tiny_shards, training_config):
    store = ArtifactStore(tiny_shards.store_url)
    with pytest.raises(InputError, match="--batch-size: batch_size 100000 is larger"):
        plan_pretrain(store, tiny_shards.shards_id, training_config(batch_size=100_000))


def test_sequences_longer_than_the_positions_are_refused(tiny_shards, training_config):
    store = ArtifactStore(tiny_shards.store_url)
    config = training_config(max_position_embeddings=32)
    with pytest.raises(InputError, match="up to 64 tokens.*max_position_embeddings \\(32\\)"):
        plan_pretrain(store, tiny_shards.shards_id, config)


def test_unknown_preset_and_bad_shapes_name_the_field():
    with pytest.raises(ValidationError, match="preset"):
        TrainConfig(preset="huge")
    with pytest.raises(ValidationError, match="hidden_size \\(100\\) must be a multiple"):
        TrainConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValidationError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_shards_id_of_another_kind_is_refused(tiny_shards, training_config):
    store = ArtifactStore(tiny_shards.store_url)
    with pytest.raises(Exception, match="tokenizer.*not.*shards|shards"):
        plan_pretrain(store, tiny_shards.tokenizer_id, training_config())


def test_init_from_a_model_of_another_tokenizer_is_refused(tiny_shards, training_config, tmp_path):
    """Phase-2 training starts from a model; its token ids must mean the same words."""
    store = ArtifactStore(tiny_shards.store_url)
    staging = tmp_path / "fake"
    staging.mkdir()
    (staging / "note.txt").write_text("a model trained with another tokenizer")
    other = store.publish(
        staging,
        "model-00000000000000000001",
        config={},
        layout={
            "tokenizer": "tokenizer-00000000000000000002",
            "architecture": {
                "vocab_size": 2000,
                "hidden_size": 128,
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_size": 512,
            },
        },
    ).manifest
    with pytest.raises(InputError, match="trained with tokenizer tokenizer-0+2.*shards were made"):
        plan_pretrain(store, tiny_shards.shards_id, training_config(init_from=other.id))


def test_init_from_continues_from_the_models_weights(tiny_shards, tiny_model, training_config):
    store = ArtifactStore(tiny_shards.store_url)
    plan = plan_pretrain(store, tiny_shards.shards_id, training_config(init_from=tiny_model))
    assert plan.upstream == {"shards": tiny_shards.shards_id, "init": tiny_model}
    from bertflow.model.training.train import load_weights

    model = BertForPreTraining(plan.architecture)
    load_weights(store, tiny_model, model)
    trained = torch.load(store.local_path(tiny_model) / "checkpoint/last.ckpt", weights_only=False)[
        "state_dict"
    ]
    assert torch.equal(
        model.bert.encoder.layer[0].output.dense.weight,
        trained["model.bert.encoder.layer.0.output.dense.weight"],
    )


def test_cli_reports_a_bad_option_naming_it(tiny_shards, capsys):
    from bertflow.flows.cli import main

    code = main(
        [
            "--store",
            tiny_shards.store_url,
            "pretrain",
            "--shards",
            tiny_shards.shards_id,
            "--lr",
            "-1",
        ]
    )
    assert code == 2 and "--lr" in capsys.readouterr().err


# -- optimizer and schedule -----------------------------------------------------------------------


def test_no_weight_decay_on_biases_and_layer_norms():
    model = BertForPreTraining(tiny(vocab_size=100))
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") for p in decay["params"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "bert.encoder.layer.0.attention.output.LayerNorm.weight" in skipped
    assert "cls.predictions.bias" in skipped
    assert all(n.endswith("bias") or "LayerNorm" in n for n in skipped)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_linear_schedule_warms_up_then_decays_to_zero():
    o = OptimConfig(warmup_steps=10, max_steps=110, schedule="linear")
    assert lr_factor(0, o) == pytest.approx(0.1)
    assert lr_factor(9, o) == pytest.approx(1.0)
    assert lr_factor(60, o) == pytest.approx(0.5)
    assert lr_factor(110, o) == 0.0


def test_one_cycle_schedule_anneals_by_cosine():
    o = OptimConfig(warmup_steps=0, max_steps=100, schedule="one-cycle")
    assert lr_factor(0, o) == pytest.approx(1 / 30)  # 30% warm-up by default
    assert lr_factor(29, o) == pytest.approx(1.0)
    assert lr_factor(65, o) == pytest.approx(0.5, abs=0.01)
    assert lr_factor(100, o) == pytest.approx(0.0, abs=1e-9)


def test_operational_options_do_not_change_the_model_id(tiny_shards, training_config):
    store = ArtifactStore(tiny_shards.store_url)
    a = plan_pretrain(store, tiny_shards.shards_id, training_config())
    b = plan_pretrain(store, tiny_shards.shards_id, training_config(log_every=5, compile=True))
    c = plan_pretrain(store, tiny_shards.shards_id, training_config(lr=2e-3))
    assert a.artifact_id == b.artifact_id != c.artifact_id


def test_training_entry_point_help_lists_the_options():
    done = subprocess.run(
        [sys.executable, "-m", "bertflow.model.training", "--help"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0
    for option in (
        "--shards",
        "--preset",
        "--max-steps",
        "--devices",
        "--num-nodes",
        "--strategy",
        "--precision",
        "--resume",
        "--compile",
    ):
        assert option in done.stdout


def test_run_dir_defaults_beside_a_local_store_else_under_bertflow_runs(monkeypatch, tmp_path):
    from bertflow.model.training.plan import default_run_dir

    monkeypatch.delenv("BERTFLOW_RUNS", raising=False)
    local = ArtifactStore(str(tmp_path / "store"))
    assert default_run_dir(local, "model-abc") == tmp_path / "store" / ".runs" / "model-abc"
    assert local.list() == []  # the runs folder is not taken for an artifact
    remote = ArtifactStore("memory://bucket/store")
    assert default_run_dir(remote, "model-abc") == Path.home() / ".bertflow/runs/model-abc"
    monkeypatch.setenv("BERTFLOW_RUNS", str(tmp_path / "runs"))
    assert default_run_dir(local, "model-abc") == tmp_path / "runs" / "model-abc"


def test_a_failed_run_keeps_only_what_resume_needs_and_a_published_one_nothing(tmp_path):
    from bertflow.model.training.plan import clear_run

    def leftovers(name: str, checkpoint: bool) -> Path:
        run = tmp_path / name
        (run / "logs").mkdir(parents=True)
        (run / "logs" / "metrics.csv").write_text("step,loss\n")
        if checkpoint:
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
        return run

    resumable = leftovers("resumable", checkpoint=True)
    assert "--resume" in clear_run(resumable, published=False)
    assert (resumable / "checkpoints" / "last.ckpt").exists() and (resumable / "logs").exists()
    nothing_to_resume = leftovers("early", checkpoint=False)
    clear_run(nothing_to_resume, published=False)
    assert not nothing_to_resume.exists()
    published = leftovers("published", checkpoint=True)
    (published / "notes.txt").write_text("the user's own file")  # an explicit --run-dir
    clear_run(published, published=True)
    assert [p.name for p in published.iterdir()] == ["notes.txt"]


def test_mixed_precision_trains_with_gradient_clipping(tiny_shards, training_config, tmp_path):
    """Lightning's mixed-precision plugin refuses to clip a fused optimizer's gradients (a
    CUDA run of bench/gpu.py stopped so at its first step); bf16-mixed on the CPU takes the
    same path."""
    store = ArtifactStore(tiny_shards.store_url)
    config = training_config(
        max_steps=2, precision="bf16-mixed", grad_clip=1.0, val_every=100, checkpoint_every=100
    )
    outcome = train(store, plan_pretrain(store, tiny_shards.shards_id, config), tmp_path / "run")
    assert outcome.completed and outcome.published.manifest.stats["precision"] == "bf16-mixed"


@pytest.mark.gpu
def test_on_a_gpu_bf16_training_learns_and_the_artifact_names_the_device(
    tiny_shards, training_config, tmp_path
):
    """The path the CPU suite cannot take: CUDA, bf16 autocast, the fused optimizer, pinned
    memory, loader workers. The loss falls as on the CPU, and the model says where it trained."""
    store = ArtifactStore(tiny_shards.store_url)
    config = training_config(
        accelerator="gpu", precision="auto", max_steps=40, num_workers=2, grad_clip=1.0
    )
    outcome = train(store, plan_pretrain(store, tiny_shards.shards_id, config), tmp_path / "run")
    stats = outcome.published.manifest.stats
    assert stats["precision"] == "bf16-mixed"  # auto picks it on a GPU that has bf16
    assert stats["device"] == torch.cuda.get_device_name(0)
    assert stats["train_loss"] < stats["first_train_loss"] - 0.5
    assert stats["tokens_per_s"] > 0 and stats["mfu"] > 0

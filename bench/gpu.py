"""The GPU checks, in one run on a CUDA machine: the BERT-base train step in bf16 (tokens/s, MFU),
a few hundred steps of base pretraining whose loss must fall, and bf16 fine-tuning of that model.

    python bench/gpu.py [--steps 300] [--batch-size 128] [--store DIR] [--task SPEC]
                        [--finetune-seeds K] [--peak-tflops T]
    python bench/gpu.py --device cpu --tiny      # every piece, small, on the CPU (a smoke test)

1. Train step: bench/train_step.py's run for the `base` preset at 128 and 512 tokens in bf16
   autocast (ours and transformers' BertForPreTraining with the same weights, checked for parity
   first): ms per step, tokens/s, and MFU = `training_flops` per second over the GPU's dense bf16
   peak (`peak_flops`, or --peak-tflops).
2. Pretraining: `plan_pretrain` + `train` of the bert-base preset's first phase (`bert_base()` in
   flows/pipeline_config.py: batch 256, lr 1e-4) for --steps steps, warm-up a tenth of them, in
   bf16-mixed, on the demo shards at 128 tokens (built as bench/quality.py builds them, in --store,
   default a temporary folder): the first and last logged training loss, tokens/s and MFU; the
   run fails unless the loss fell.
3. Fine-tuning: that model on the task (default: the shared SST-2 beside the checkout, else
   demo-era) as the evaluate stage fine-tunes, with the bert-base preset's recipe (lr 3e-5, 3
   epochs), bf16 autocast (`finetune`'s on CUDA): the median score over the task's seeds.

Without CUDA it stops at once ("needs a CUDA GPU"), unless --device cpu. --tiny makes each piece
small (the tiny preset, the demo's training and evaluation recipes, a few steps, one fine-tuning
seed on a sample), so `--device cpu --tiny` checks the whole script in a few minutes on a laptop.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import quality  # bench/ is the script's folder, so on sys.path
import torch
import train_step

from bertflow.flows.pipeline_config import PipelineConfig, bert_base, demo
from bertflow.model.evaluation.stage import load_pretrained
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.module import peak_flops
from bertflow.model.training.plan import plan_pretrain
from bertflow.model.training.train import train
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import ArtifactStore

SEQ_LENS = [128, 512]  # the train step's lengths
PRETRAIN_LEN = 128  # BERT's first phase
TINY_STEPS, TINY_FINETUNE_EXAMPLES = 30, 300


def step_speed(args: argparse.Namespace) -> None:
    """Part 1: bench/train_step.py's table for one preset at SEQ_LENS."""
    on_cuda = args.device.type == "cuda"
    options = argparse.Namespace(
        seq_len=SEQ_LENS,
        batch_size=args.batch_size or (8 if args.tiny else 128),
        steps=3 if args.tiny else 10,
        warmup=1 if args.tiny else 3,
        device=args.device,
        precision="bf16" if on_cuda else "fp32",
        compile=False,
        profile="never",
    )
    preset = "tiny" if args.tiny else "base"
    print(
        f"## 1. train step: {preset}, {options.precision}, batch {options.batch_size}\n", flush=True
    )
    rows, _ = train_step.run_preset(preset, options)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(args.device)
    print()
    train_step.print_table(rows, peak, on_cuda)
    if on_cuda and not peak:
        print("\nMFU: unknown GPU, pass --peak-tflops")


def pretraining_recipe(args: argparse.Namespace) -> TrainConfig:
    """The bert-base preset's first phase (the demo's with --tiny), for --steps on this device."""
    source = demo() if args.tiny else bert_base()
    steps = args.steps or (TINY_STEPS if args.tiny else 300)
    on_cuda = args.device.type == "cuda"
    return quality.changed(
        source.phases[0].pretrain,
        max_steps=steps,
        warmup_steps=max(1, steps // 10),
        log_every=max(1, steps // 10),
        val_every=steps + 1,
        checkpoint_every=steps + 1,
        devices="1",
        accelerator="gpu" if on_cuda else "cpu",
        precision="bf16-mixed" if on_cuda else "32-true",
    )


def pretrain(args: argparse.Namespace, store: ArtifactStore, shards_id: str) -> Manifest:
    """Part 2: train, print the first and last logged loss; fail unless the loss fell."""
    config = pretraining_recipe(args)
    print(
        f"\n## 2. pretraining: {config.preset}, batch {config.batch_size}, lr {config.lr:g}, "
        f"{config.max_steps} steps, {config.precision}, on {shards_id}\n",
        flush=True,
    )
    plan = plan_pretrain(store, shards_id, config)
    with (
        tempfile.TemporaryDirectory(prefix="bertflow-gpu-run-") as run_dir,
        contextlib.redirect_stdout(quality.WithoutProgressRecords(sys.stdout)),
    ):
        outcome = train(store, plan, Path(run_dir))  # validates once, at the end
    if outcome.published is None:
        raise SystemExit("pretraining stopped before max_steps")
    model = outcome.published.manifest
    s = model.stats
    first, last = s["first_train_loss"], s["train_loss"]
    rate = f"{s['tokens_per_s']:,.0f}" if s.get("tokens_per_s") else "—"
    mfu = f"{s['mfu']:.1%}" if s.get("mfu") is not None else "—"
    val = s["validation"].get("mlm_loss", float("nan"))
    print(
        f"\nfirst logged loss {first:.3f}, last {last:.3f}; tokens/s {rate}, MFU {mfu}; "
        f"validation MLM loss {val:.3f}"
    )
    if not last < first:
        raise SystemExit(f"the pretraining loss did not fall: {first:.3f} -> {last:.3f}")
    return model


def finetuning(
    args: argparse.Namespace, store: ArtifactStore, shards_id: str, model: Manifest
) -> None:
    """Part 3: the pretrained model fine-tuned on the task, the evaluate stage's way."""
    source: PipelineConfig = demo() if args.tiny else bert_base()
    given = {"device": args.device.type, "seeds": args.finetune_seeds or (1 if args.tiny else None)}
    if args.tiny:
        given["max_train_examples"] = TINY_FINETUNE_EXAMPLES
    evaluation = quality.changed(source.evaluate, **given)
    spec = quality.task_spec(args.task, source)
    downstream = quality.prepare_downstream(spec, store, shards_id, evaluation, PRETRAIN_LEN)
    if downstream is None:
        return
    bf16 = args.device.type == "cuda" and torch.cuda.is_bf16_supported()
    print(
        f"\n## 3. fine-tuning on {downstream.name}: {len(downstream.train):,} examples, "
        f"{len(downstream.prepared.seeds)} seed(s), {'bf16 autocast' if bf16 else 'fp32'}",
        flush=True,
    )
    network, _ = load_pretrained(store, model)
    score = quality.downstream_score(network, downstream)
    print(f"{downstream.name} {downstream.metric}: {score:.3f} (median over seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    option = parser.add_argument
    option("--device", choices=["cuda", "cpu"], default="cuda", help="default: cuda")
    option("--tiny", action="store_true", help="small pieces: the tiny preset, a few steps")
    option("--steps", type=int, help=f"pretraining steps (default: 300; {TINY_STEPS} with --tiny)")
    option("--batch-size", type=int, help="train-step batch (default: 128; 8 with --tiny)")
    option("--store", type=Path, help="artifact store folder (default: a temporary one)")
    option(
        "--task",
        help="fine-tuning task, a `bertflow evaluate --task` spec (default: the "
        f"shared SST-2 when beside the checkout, else {quality.FALLBACK_TASK})",
    )
    option("--finetune-seeds", type=int, help="default: the evaluate stage's (1 with --tiny)")
    option("--peak-tflops", type=float, help="dense bf16 peak for MFU (default: the data sheet)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bench/gpu.py needs a CUDA GPU, and none is visible "
            "(--device cpu --tiny runs its pieces small on the CPU)"
        )
    args.device = torch.device(args.device)
    where = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "CPU"
    print(f"{where}; torch {torch.__version__}\n", flush=True)
    step_speed(args)
    with tempfile.TemporaryDirectory(prefix="bertflow-gpu-store-") as scratch:
        store = ArtifactStore(str(args.store or scratch))
        shards_id = quality.build_shards(store, demo(), PRETRAIN_LEN)
        model = pretrain(args, store, shards_id)
        finetuning(args, store, shards_id, model)


if __name__ == "__main__":
    main()

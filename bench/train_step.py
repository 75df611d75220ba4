"""Training step time: our BertForPreTraining against transformers', same config, batch and machine.

    python bench/train_step.py [--presets mini base] [--seq-len 128] [--batch-size 32]
                               [--steps 10] [--warmup 3] [--device {cpu,cuda}]
                               [--precision {fp32,bf16}] [--compile] [--peak-tflops T]
                               [--profile {auto,always,never}]

For each preset, our model is built (BERT's initialisation) and transformers' `BertForPreTraining`
(attn_implementation="sdpa") is given its weights through `hf_state_dict`; before any timing, both
in eval mode and fp32 must give the same NSP logits and MLM logits at the masked positions (within
1e-4), or the run stops. A step is forward, loss (MLM cross-entropy + NSP cross-entropy, as
transformers' own `loss`), backward and a fused AdamW step (lr 1e-4), in bf16 autocast if asked.

The batch is random but shaped like pretraining: ids in [5, 30522), every example full length
(attention mask all ones), segment A the first half, 15% of the positions of every example
labelled for MLM (positions drawn with a seeded generator), random NSP labels. The contenders run
interleaved, one step each per round (A B A B ...), so drifting machine load hits all alike;
`--warmup` rounds are left out and the median of `--steps` timed rounds counts.

On CUDA, MFU counts the same useful FLOPs for both (`training_flops`: the MLM head at the masked
positions only). transformers computes its head and loss at every position, 6-7x the head's useful
work: that is its handicap, and it is not credited as useful.
When ours takes more than 0.75 x transformers' time (`--profile auto`), one step of each is timed
part by part and profiled op by op, printed after the table.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from bertflow.model.bert import (
    PRESETS,
    BertConfig,
    BertForPreTraining,
    hf_state_dict,
    parameter_count,
    preset,
    training_flops,
)
from bertflow.model.training.module import peak_flops

ANCHOR = "transformers BertForPreTraining (sdpa)"
OURS = "bertflow BertForPreTraining"
OURS_COMPILED = "bertflow BertForPreTraining, torch.compile"
GOAL_VS_ANCHOR = 0.75  # ours takes at most this share of transformers' step time
IGNORE = -100  # label of an unmasked position, as in both models
FIRST_ID = 5
MASKED_SHARE = 0.15
LR = 1e-4
PARITY_ATOL = 1e-4
PARITY_EXAMPLES = 8  # enough to compare logits; keeps the fp32 check quick for big presets
TIED_IN_HF = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
PROFILE_STEPS = 3
PROFILE_TOP = 15

Precision = Literal["fp32", "bf16"]


class Batch(NamedTuple):
    input_ids: torch.Tensor  # (B, L)
    token_type_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L), all ones
    labels: torch.Tensor  # (B, L), IGNORE but at the masked positions
    next_sentence_label: torch.Tensor  # (B,)


def make_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> Batch:
    """A full-length batch, round(15% of seq_len) labelled positions per example (on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(FIRST_ID, vocab_size, (batch_size, seq_len), generator=g)
    per_example = round(MASKED_SHARE * seq_len)
    picked = torch.rand(batch_size, seq_len, generator=g).argsort(dim=1)[:, :per_example]
    labels = torch.full_like(input_ids, IGNORE).scatter_(1, picked, input_ids.gather(1, picked))
    token_type_ids = (torch.arange(seq_len) >= seq_len // 2).long().repeat(batch_size, 1)
    nsp = torch.randint(0, 2, (batch_size,), generator=g)
    return Batch(input_ids, token_type_ids, torch.ones_like(input_ids), labels, nsp)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(t.to(device) for t in batch))


# -- the two models, with the same weights ---------------------------------------------------------


def hf_config(config: BertConfig) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        hidden_act="gelu",
        hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        layer_norm_eps=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        attn_implementation="sdpa",
    )


def hf_twin(ours: BertForPreTraining) -> transformers.BertForPreTraining:
    """transformers' model holding our weights; only its tied decoder may be left to its tying."""
    hf = transformers.BertForPreTraining(hf_config(ours.config))
    missing, unexpected = hf.load_state_dict(hf_state_dict(ours), strict=False)
    if set(missing) - TIED_IN_HF or unexpected:
        raise SystemExit(f"weights do not map onto transformers': {missing=} {unexpected=}")
    heads = hf.cls.predictions
    if heads.decoder.weight is not hf.bert.embeddings.word_embeddings.weight:
        raise SystemExit("transformers' decoder weight is not tied to its word embeddings")
    return hf


@torch.no_grad()
def parity(ours: nn.Module, hf: nn.Module, batch: Batch) -> tuple[float, float]:
    """Largest |difference| of the MLM logits at the masked positions and of the NSP logits, both
    models in eval mode (no dropout), in the precision of their weights."""
    ours.eval(), hf.eval()
    mine = ours(batch.input_ids, batch.token_type_ids, batch.attention_mask, batch.labels)
    theirs = hf(
        input_ids=batch.input_ids,
        token_type_ids=batch.token_type_ids,
        attention_mask=batch.attention_mask,
    )
    ours.train(), hf.train()
    masked = batch.labels != IGNORE  # (B, L); indexing keeps row-major order, as ours does
    if not torch.equal(mine.mlm_targets, batch.labels[masked]):
        raise SystemExit("our MLM targets are not the labels at the masked positions")
    mlm = (mine.mlm_logits - theirs.prediction_logits[masked]).abs().max().item()
    nsp = (mine.nsp_logits - theirs.seq_relationship_logits).abs().max().item()
    return mlm, nsp


def check_parity(name: str, ours: nn.Module, hf: nn.Module, batch: Batch) -> None:
    mlm, nsp = parity(ours, hf, Batch(*(t[:PARITY_EXAMPLES] for t in batch)))
    if max(mlm, nsp) > PARITY_ATOL:
        raise SystemExit(f"{name}: parity FAILED: max |diff| MLM {mlm:.2e}, NSP {nsp:.2e}")
    print(f"{name}: parity ok (fp32, eval; max |diff| MLM {mlm:.1e}, NSP {nsp:.1e})", flush=True)


# -- one training step ----------------------------------------------------------------------------


def our_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    out = model(batch.input_ids, batch.token_type_ids, batch.attention_mask, batch.labels)
    mlm = F.cross_entropy(out.mlm_logits, out.mlm_targets)
    return mlm + F.cross_entropy(out.nsp_logits, batch.next_sentence_label)


def hf_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    return model(**batch._asdict()).loss  # its own: MLM over every position's logits + NSP


@dataclass
class Contender:
    name: str
    model: nn.Module
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    optimizer: torch.optim.Optimizer = field(init=False)
    seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        # CUDA and (since torch 2.4) the CPU have fused AdamW kernels, the only devices used here
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, fused=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def step_seconds(c: Contender, batch: Batch, precision: Precision) -> float:
    device = batch.input_ids.device
    synchronize(device)
    started = time.perf_counter()
    with autocast(device, precision):
        loss = c.loss(c.model, batch)
    loss.backward()
    c.optimizer.step()
    c.optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - started


def time_interleaved(contenders: list[Contender], batch: Batch, args: argparse.Namespace) -> None:
    """One step of each per round, A B A B ...; rounds after the warm-up go to `seconds`."""
    for c in contenders:
        c.seconds.clear()
    for round_ in range(args.warmup + args.steps):
        for c in contenders:
            seconds = step_seconds(c, batch, args.precision)
            if round_ >= args.warmup:
                c.seconds.append(seconds)


# -- where the time goes ---------------------------------------------------------------------------


def parts_ours(model: BertForPreTraining, batch: Batch) -> dict[str, Callable]:
    """Our forward cut into its parts, each a function of the previous part's result."""
    labels = batch.labels

    def encoder(_: None) -> tuple[torch.Tensor, torch.Tensor]:
        return model.bert(batch.input_ids, batch.token_type_ids, batch.attention_mask)

    def heads(hidden: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        sequence, pooled = hidden
        where = (labels != IGNORE).flatten()
        mlm = model.cls.predictions(sequence.flatten(0, 1)[where])  # (N, vocab)
        return mlm, labels.flatten()[where], model.cls.seq_relationship(pooled)

    def loss(logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
        mlm, targets, nsp = logits
        return F.cross_entropy(mlm, targets) + F.cross_entropy(nsp, batch.next_sentence_label)

    return {"encoder forward": encoder, "heads forward": heads, "loss forward": loss}


def parts_hf(model: transformers.BertForPreTraining, batch: Batch) -> dict[str, Callable]:
    """transformers' forward as `BertForPreTraining.forward` runs it, cut into the same parts."""

    def encoder(_: None) -> tuple[torch.Tensor, torch.Tensor]:
        out = model.bert(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
            return_dict=True,
        )
        return out[0], out[1]

    def heads(hidden: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return model.cls(*hidden)  # (B, L, vocab) at every position, (B, 2)

    def loss(logits: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mlm, nsp = logits
        vocab = model.config.vocab_size
        mlm_loss = F.cross_entropy(mlm.view(-1, vocab), batch.labels.view(-1))
        return mlm_loss + F.cross_entropy(nsp, batch.next_sentence_label)

    return {"encoder forward": encoder, "heads forward": heads, "loss forward": loss}


def part_seconds(c: Contender, forward: dict[str, Callable], batch: Batch, precision: Precision):
    """Seconds of each forward part, the backward and the optimizer step in one step."""
    device = batch.input_ids.device
    seconds, value = {}, None

    def timed(name: str, run: Callable[[], object]) -> object:
        synchronize(device)
        started = time.perf_counter()
        result = run()
        synchronize(device)
        seconds[name] = time.perf_counter() - started
        return result

    with autocast(device, precision):
        for name, part in forward.items():
            value = timed(name, lambda part=part, value=value: part(value))
    timed("backward", value.backward)
    timed("optimizer step", c.optimizer.step)
    c.optimizer.zero_grad(set_to_none=True)
    return seconds


def op_milliseconds(c: Contender, batch: Batch, precision: Precision) -> dict[str, float]:
    """Self time per op (device time on CUDA), ms per step, over PROFILE_STEPS steps."""
    on_gpu = batch.input_ids.is_cuda
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_gpu:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(PROFILE_STEPS):
            step_seconds(c, batch, precision)
    return {
        e.key: (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e3 / PROFILE_STEPS
        for e in profiler.key_averages()
    }


def parts_table(anchor: Contender, ours: Contender, batch: Batch, precision: Precision) -> list:
    """Markdown rows: ms of each part of a step, medians of PROFILE_STEPS interleaved steps."""
    makers = {anchor.name: parts_hf, ours.name: parts_ours}
    runs: dict[str, list[dict[str, float]]] = {anchor.name: [], ours.name: []}
    for _ in range(PROFILE_STEPS):
        for c in (anchor, ours):
            runs[c.name].append(part_seconds(c, makers[c.name](c.model, batch), batch, precision))
    theirs, mine = (
        {part: statistics.median(r[part] for r in runs[name]) * 1e3 for part in runs[name][0]}
        for name in (anchor.name, ours.name)
    )
    theirs["total"], mine["total"] = sum(theirs.values()), sum(mine.values())
    lines = [
        "| part | transformers ms | ours ms | ours - transformers ms |",
        "|---|---:|---:|---:|",
    ]
    for part, ms in theirs.items():
        lines.append(f"| {part} | {ms:.1f} | {mine[part]:.1f} | {mine[part] - ms:+.1f} |")
    return lines


def ops_table(anchor: Contender, ours: Contender, batch: Batch, precision: Precision) -> list:
    """Markdown rows: the PROFILE_TOP ops taking most self time in either, ms per step."""
    theirs, mine = (op_milliseconds(c, batch, precision) for c in (anchor, ours))
    top = sorted(set(theirs) | set(mine), key=lambda k: -max(theirs.get(k, 0), mine.get(k, 0)))
    lines = ["| op | transformers ms | ours ms |", "|---|---:|---:|"]
    for op in top[:PROFILE_TOP]:
        lines.append(f"| `{op}` | {theirs.get(op, 0):.1f} | {mine.get(op, 0):.1f} |")
    return lines


def profile(anchor: Contender, ours: Contender, batch: Batch, precision: Precision) -> list[str]:
    kind = "GPU" if batch.input_ids.is_cuda else "CPU"
    return [
        *parts_table(anchor, ours, batch, precision),
        f"\ntop {PROFILE_TOP} ops by self {kind} time (torch.profiler), ms per step:\n",
        *ops_table(anchor, ours, batch, precision),
    ]


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    preset: str
    seq_len: int
    batch_size: int
    contender: str
    seconds: float  # median per step
    flops: float  # useful training FLOPs of the step


def contenders_for(name: str, args: argparse.Namespace) -> list[Contender]:
    """transformers', ours and, with --compile, ours compiled: same weights, checked for parity."""
    torch.manual_seed(0)
    config = preset(name)
    ours = BertForPreTraining(config)
    hf = hf_twin(ours)
    ours.to(args.device), hf.to(args.device)
    batch = make_batch(PARITY_EXAMPLES, max(args.seq_len), config.vocab_size)
    check_parity(name, ours, hf, to_device(batch, args.device))
    print(f"{name}: {parameter_count(ours) / 1e6:.1f}M parameters", flush=True)
    contenders = [Contender(ANCHOR, hf, hf_loss), Contender(OURS, ours, our_loss)]
    if args.compile:
        contenders.append(Contender(OURS_COMPILED, torch.compile(copy.deepcopy(ours)), our_loss))
    return contenders


def run_preset(name: str, args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """Parity once, then every sequence length timed; the table rows and any profile lines."""
    contenders = contenders_for(name, args)
    config = contenders[1].model.config
    rows, lines = [], []
    for seq_len in args.seq_len:
        batch = to_device(make_batch(args.batch_size, seq_len, config.vocab_size), args.device)
        masked = int((batch.labels != IGNORE).sum())
        lengths = torch.full((args.batch_size,), seq_len)
        flops = training_flops(config, lengths, masked)  # the useful work, the same for all
        time_interleaved(contenders, batch, args)
        median = {c.name: statistics.median(c.seconds) for c in contenders}
        for c in contenders:
            rows.append(Row(name, seq_len, args.batch_size, c.name, median[c.name], flops))
            every = ", ".join(f"{s * 1e3:.0f}" for s in c.seconds)
            print(f"{name}, seq len {seq_len}, {c.name}: {every} ms", flush=True)
        missed = median[OURS] / median[ANCHOR] > GOAL_VS_ANCHOR
        if args.profile == "always" or (args.profile == "auto" and missed):
            title = f"{name}, seq len {seq_len}, batch {args.batch_size}, {args.precision}"
            lines += [f"\n## where the time goes: {title}\n"]
            lines += profile(contenders[0], contenders[1], batch, args.precision)
    del contenders
    gc.collect()
    if args.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, lines


def print_table(rows: list[Row], peak: float | None, on_cuda: bool) -> None:
    header = (
        "| preset | seq len | batch | contender | ms/step (median) | x transformers | tokens/s |"
    )
    rule = "|---|---:|---:|---|---:|---:|---:|"
    if on_cuda:
        header += " TFLOP/s | MFU |"
        rule += "---:|---:|"
    print(f"{header}\n{rule}")
    anchors = {(r.preset, r.seq_len): r.seconds for r in rows if r.contender == ANCHOR}
    for r in rows:
        ratio = r.seconds / anchors[r.preset, r.seq_len]
        line = (
            f"| {r.preset} | {r.seq_len} | {r.batch_size} | {r.contender} | {r.seconds * 1e3:,.0f}"
            f" | {ratio:.2f} | {r.batch_size * r.seq_len / r.seconds:,.0f} |"
        )
        if on_cuda:
            achieved = r.flops / r.seconds
            mfu = f"{achieved / peak:.1%}" if peak else "—"
            line += f" {achieved / 1e12:.1f} | {mfu} |"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=["mini", "base"])
    parser.add_argument("--seq-len", type=int, nargs="+", default=[128])
    parser.add_argument("--batch-size", type=int, help="default: 32 on the CPU, 128 on CUDA")
    parser.add_argument("--steps", type=int, default=10, help="timed rounds; the median counts")
    parser.add_argument("--warmup", type=int, default=3, help="rounds before timing starts")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="default: fp32 on the CPU, bf16 (autocast) on CUDA",
    )
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    parser.add_argument(
        "--peak-tflops", type=float, help="dense bf16 peak for MFU (default: the GPU's data sheet)"
    )
    parser.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help=f"profile both: auto = when ours takes over {GOAL_VS_ANCHOR} x transformers' time",
    )
    args = parser.parse_args()
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_cuda = args.device.type == "cuda"
    args.batch_size = args.batch_size or (128 if on_cuda else 32)
    args.precision = args.precision or ("bf16" if on_cuda else "fp32")
    # the data-sheet lookup (PEAK_BF16_FLOPS beside the Lightning module), unless given
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(args.device)

    if on_cuda:
        machine = torch.cuda.get_device_name(args.device)
    else:
        machine = f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{machine}; torch {torch.__version__}, transformers {transformers.__version__};"
        f" {args.precision}; AdamW fused, lr {LR}; {args.warmup} warm-up and {args.steps}"
        " timed rounds, interleaved\n",
        flush=True,
    )
    rows, lines = [], []
    for name in args.presets:
        preset_rows, preset_lines = run_preset(name, args)
        rows += preset_rows
        lines += preset_lines
    print()
    print_table(rows, peak, on_cuda)
    if on_cuda and peak:
        source = "--peak-tflops" if args.peak_tflops else "data-sheet dense bf16 peak"
        print(
            f"\nMFU: useful FLOPs (training_flops, the same for both) per second over"
            f" {peak / 1e12:.0f} TFLOP/s ({source})"
        )
    elif on_cuda:
        print("\nMFU: unknown GPU, pass --peak-tflops")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

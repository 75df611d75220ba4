"""What checking upstream files costs each stage, beside the stage itself, in one run.

    python bench/integrity.py [--steps 300] [--store DIR] [--repeats 3]

Every stage re-hashes the upstream files it reads against their manifests before it builds
(`ArtifactStore.check_intact`). This runs the demo pipeline's stages on the demo corpus, each
timed as a whole (in this process, the stage's own functions; the store is a temporary folder
unless --store names one, and then its artifacts are reused: pass a new folder for stage times),
then times each stage's check alone (the median of --repeats), and prints the check's share of
its stage. Pretraining runs --steps steps of the demo recipe; evaluation is the demo's task with
one seed and no baselines. Goal: the check costs at most GOAL_SHARE of its stage.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from quality import WithoutProgressRecords  # bench/ is the script's folder, so on sys.path

from bertflow.flows.pipeline_config import demo
from bertflow.model.evaluation.stage import build_and_publish as evaluate
from bertflow.model.evaluation.stage import check_upstream as check_evaluation
from bertflow.model.evaluation.stage import plan_evaluation
from bertflow.model.training.plan import check_upstream as check_training
from bertflow.model.training.plan import plan_pretrain
from bertflow.model.training.train import train
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.ingest.stage import ingest
from bertflow.pipeline.shards.stage import make_shards
from bertflow.pipeline.tokenizer.stage import make_tokenizer

GOAL_SHARE = 0.03  # "a few percent"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def upstream_bytes(store: ArtifactStore, ids: list[str]) -> int:
    return sum(f.size for i in ids for f in store.require(i).files)


def run(store: ArtifactStore, steps: int, repeats: int, run_dir: Path) -> list[tuple]:
    pipeline = demo()
    phase = pipeline.phases[0]
    rows = []

    seconds, published = timed(lambda: ingest(store, pipeline.ingest))
    corpus = published.manifest.id
    seconds, published = timed(lambda: make_tokenizer(store, corpus, pipeline.tokenizer))
    tokenizer = published.manifest.id
    check = median_seconds(lambda: store.check_intact(store.require(corpus)), repeats)
    rows.append(("tokenizer", "corpus", upstream_bytes(store, [corpus]), seconds, check))

    seconds, published = timed(lambda: make_shards(store, corpus, tokenizer, phase.shard))
    shards = published.manifest.id

    def check_shards() -> None:
        store.check_intact(store.require(corpus))
        store.check_intact(store.require(tokenizer))

    check = median_seconds(check_shards, repeats)
    rows.append(
        ("shard", "corpus + tokenizer", upstream_bytes(store, [corpus, tokenizer]), seconds, check)
    )

    base = phase.pretrain
    warmup = round(base.resolved_warmup() * steps / base.max_steps)
    config = type(base).model_validate(
        {
            **base.model_dump(),
            "max_steps": steps,
            "warmup_steps": warmup,
            "val_every": steps,
            "checkpoint_every": steps,
        }
    )
    plan = plan_pretrain(store, shards, config)
    with contextlib.redirect_stdout(WithoutProgressRecords(sys.stdout)):
        seconds, _ = timed(lambda: train(store, plan, run_dir))
    model = store.require(plan.artifact_id)
    check = median_seconds(lambda: check_training(store, plan), repeats)
    rows.append(
        (f"pretrain ({steps} steps)", "shards", upstream_bytes(store, [shards]), seconds, check)
    )

    evaluation = type(pipeline.evaluate).model_validate(
        {**pipeline.evaluate.model_dump(), "seeds": 1, "baselines": []}
    )
    eval_plan = plan_evaluation(store, model.id, evaluation)
    seconds, _ = timed(lambda: evaluate(store, eval_plan))
    read = [f.size for f in model.files if f.path.startswith("hf/")]
    read += [f.size for f in store.require(shards).files if f.path.startswith("validation/")]
    check = median_seconds(lambda: check_evaluation(store, model), repeats)
    rows.append(
        ("evaluate (1 seed)", "model export + validation shards", sum(read), seconds, check)
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bertflow-bench-integrity-") as tmp:
        store = ArtifactStore(str(args.store or Path(tmp) / "store"))
        rows = run(store, args.steps, args.repeats, Path(tmp) / "run")
    print("\n| stage | upstream checked | MB | stage s | check s | check / stage |")
    print("|---|---|---:|---:|---:|---:|")
    worst = 0.0
    for stage, what, size, seconds, check in rows:
        share = check / seconds
        worst = max(worst, share)
        print(
            f"| {stage} | {what} | {size / 1e6:.1f} | {seconds:.1f} | {check:.3f} | {share:.2%} |"
        )
    met = "met" if worst <= GOAL_SHARE else "NOT met"
    print(f"\ngoal: the check at most {GOAL_SHARE:.0%} of its stage: worst {worst:.2%}, {met}")


if __name__ == "__main__":
    main()

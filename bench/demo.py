"""The demo as a user runs it, end to end, against its goals: does the model learn?

    python bench/demo.py [--store DIR] [--config pipeline.yaml]

Runs `bertflow run --preset demo` (what `make demo` runs) as a fresh process in a new store (a
temporary folder unless --store names one; set PREFECT_API_URL to use a running Prefect server,
else the command starts Prefect's temporary one), then reads the evaluation artifact it made and
prints, beside each goal of the demo:

- the wall-clock seconds of the whole command (goal: at most 10 minutes on a 2-core machine),
  with the training's and each downstream task's share, and the share of CPU time the hypervisor
  gave to other machines meanwhile (`steal` in /proc/stat: on a shared virtual machine the same
  run takes longer when its neighbours are busy);
- held-out MLM accuracy on the validation shards at the evaluation's fixed masks (goal: 0.30);
- NSP (or SOP) accuracy (goal: clearly above chance: 0.5 + 3 standard errors of a coin on that
  many examples);
- for every downstream task, the pretrained encoder's median over seeds against the same encoder
  fine-tuned from random initialisation (goal: the gap between medians exceeds the sum of their
  seed standard deviations), with the TF-IDF baseline for scale.

Every number is read from the artifacts, so it is what `bertflow evaluate show` reports.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from steal import Steal  # bench/ is the script's folder, so on sys.path

from bertflow.pipeline.core.store import ArtifactStore

MAX_SECONDS = 600.0
MLM_ACCURACY_GOAL = 0.30
CHANCE_MARGIN_SE = 3.0


def bertflow() -> list[str]:
    """The console script beside this interpreter, as a user runs it (else the module)."""
    script = Path(sys.executable).with_name("bertflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bertflow.flows.cli"]


def run_demo(store: str, config: Path | None) -> tuple[float, str]:
    """(seconds, evaluation id) of one `bertflow run` in `store`."""
    command = [*bertflow(), "--store", store, "run", "--json"]
    command += ["--config", str(config)] if config else ["--preset", "demo"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, result["evaluation"]


def rows(
    seconds: float, stats: dict[str, Any], model_stats: dict[str, Any], stolen: float | None
) -> list[tuple[str, str, str, bool]]:
    """(measure, value, goal, met) for each goal of the demo; rows without a goal inform."""
    out = [("end to end", f"{seconds:.0f} s", f"<= {MAX_SECONDS:.0f} s", seconds <= MAX_SECONDS)]
    if "seconds" in model_stats:
        tokens = model_stats.get("tokens_per_s", 0.0)
        out.append(
            (
                "  of which pretraining",
                f"{model_stats['seconds']:.0f} s, {tokens:,.0f} tok/s",
                "",
                True,
            )
        )
    for name, task_seconds in stats.get("task_seconds", {}).items():
        out.append((f"  of which fine-tuning {name}", f"{task_seconds:.0f} s", "", True))
    if stolen is not None:
        out.append(("CPU time taken by other VMs (steal)", f"{stolen:.0%}", "", True))
    intrinsic = stats.get("intrinsic", {})
    if "mlm_acc" in intrinsic:
        acc = intrinsic["mlm_acc"]
        out.append(
            (
                "MLM accuracy (validation)",
                f"{acc:.3f}",
                f">= {MLM_ACCURACY_GOAL}",
                acc >= MLM_ACCURACY_GOAL,
            )
        )
    else:
        out.append(("MLM accuracy (validation)", "not measured", f">= {MLM_ACCURACY_GOAL}", False))
    if "nsp_acc" in intrinsic:
        n = int(intrinsic.get("examples", 0))
        bar = 0.5 + CHANCE_MARGIN_SE * math.sqrt(0.25 / max(1, n))
        out.append(
            (
                f"NSP accuracy ({n:,} examples)",
                f"{intrinsic['nsp_acc']:.3f}",
                f"> {bar:.3f}",
                intrinsic["nsp_acc"] > bar,
            )
        )
    for name, task in stats.get("tasks", {}).items():
        primary = task["primary"]
        model = task["model"][primary]
        random = task["baselines"].get("random-init", {}).get(primary)
        tfidf = task["baselines"].get("tfidf", {}).get(primary)
        seeds = len(model.get("runs", [])) or "?"
        value = f"{model['median']:.3f} ± {model.get('std', 0):.3f} ({seeds} seeds)"
        if random is None:
            out.append((f"{name} {primary}, pretrained", value, "beside random-init", False))
            continue
        gap = model["median"] - random["median"]
        spread = model.get("std", 0.0) + random.get("std", 0.0)
        out.append((f"{name} {primary}, pretrained", value, "", True))
        out.append(
            (
                f"{name} {primary}, random init",
                f"{random['median']:.3f} ± {random.get('std', 0):.3f}",
                "",
                True,
            )
        )
        out.append(
            (
                f"{name}: pretrained - random init",
                f"{gap:+.3f}",
                f"> {spread:.3f} (sum of std)",
                gap > spread,
            )
        )
        if tfidf is not None:
            out.append((f"{name} {primary}, TF-IDF (scale)", f"{tfidf['median']:.3f}", "", True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="artifact store (default: a new temporary folder)")
    parser.add_argument("--config", type=Path, help="a pipeline YAML instead of the demo preset")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bertflow-bench-demo-") as tmp:
        store = args.store or str(Path(tmp) / "store")
        with Steal() as steal:
            seconds, evaluation = run_demo(store, args.config)
        artifacts = ArtifactStore(store)
        manifest = artifacts.require(evaluation, kind="evaluation")
        model = artifacts.require(manifest.upstream["model"], kind="model")

    table = rows(seconds, manifest.stats, model.stats, steal.share)
    width = max(len(r[0]) for r in table)
    print(f"demo: {evaluation}")
    print(f"{'measure':<{width}}  {'value':>26}  {'goal':<24}  met")
    for measure, value, goal, met in table:
        verdict = ("yes" if met else "NO") if goal else ""
        print(f"{measure:<{width}}  {value:>26}  {goal:<24}  {verdict}")
    return 0 if all(met for _, _, goal, met in table if goal) else 1


if __name__ == "__main__":
    sys.exit(main())

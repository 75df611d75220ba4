"""Commands that run no flow import no heavy library: each runs in a fresh interpreter, which then
lists what of torch, Lightning, transformers, scikit-learn, matplotlib and Prefect it loaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from toy_task import write_toy_task

from bertflow.flows.cli import build_parser

HEAVY = ("torch", "lightning", "transformers", "sklearn", "matplotlib", "prefect")
# Run the command as the console script does, then print the heavy modules it left loaded.
RUN_AND_LIST = f"""
import json, sys
from bertflow.flows.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # --help
    code = e.code
print("heavy:", json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
sys.exit(code)
"""


def run_fresh(*argv: str) -> tuple[int, list[str], str]:
    """(exit code, heavy modules loaded, stdout) of `bertflow ARGV` in a new interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stdout.rstrip().splitlines()[-1]
    assert last.startswith("heavy: "), done.stdout + done.stderr
    return done.returncode, json.loads(last.removeprefix("heavy: ")), done.stdout


@pytest.fixture(scope="module")
def evaluated(tiny_shards, tiny_model, tmp_path_factory) -> tuple[str, str]:
    """(store URL, evaluation id): a copy of the tiny store with one cheap evaluation in it."""
    from bertflow.model.evaluation.stage import EvaluateConfig, run_evaluation
    from bertflow.model.evaluation.task_spec import TaskSpec
    from bertflow.pipeline.core.store import ArtifactStore

    folder = tmp_path_factory.mktemp("cli-imports")
    shutil.copytree(tiny_shards.store_url, folder / "store")
    task = write_toy_task(folder / "task.jsonl", 40)
    config = EvaluateConfig(
        tasks=[TaskSpec(path=str(task))],
        seeds=1,
        epochs=1,
        baselines=[],
        intrinsic_max_batches=1,
        max_seq_len=32,
        device="cpu",
    )
    store = ArtifactStore(str(folder / "store"))
    return store.url, run_evaluation(store, tiny_model, config).manifest.id


def subcommands() -> list[str]:
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(commands.choices)


@pytest.mark.parametrize(
    "argv", [["--help"], *([c, "--help"] for c in subcommands())], ids=" ".join
)
def test_help_imports_nothing_heavy(argv):
    code, heavy, out = run_fresh(*argv)
    assert code == 0 and "usage: bertflow" in out
    assert heavy == []


@pytest.mark.parametrize(
    "command",
    [
        "artifacts ls",
        "artifacts show {id}",
        "artifacts verify {id}",
        "lineage {id}",
        "evaluate show {id}",
        "evaluate compare {id} {id}",
    ],
)
def test_reading_the_store_imports_nothing_heavy(evaluated, command):
    store_url, evaluation = evaluated
    code, heavy, out = run_fresh("--store", store_url, *command.format(id=evaluation).split())
    assert code == 0 and evaluation in out
    assert heavy == []

"""Command-line latency: wall seconds of `bertflow` commands, each a fresh process, against
`python -c pass`.

    python bench/cli.py [--runs 5]

It first builds a small store in a temporary folder with the library (demo-small ingested, a
2000-token vocabulary, 64-token shards, a tiny model trained for 12 steps, one evaluation on a
40-line task: under a minute on a CPU), then times each command as the console script a user runs
(`.venv/bin/bertflow`), the median of `--runs` runs after one untimed warm-up run:

- `python -c pass`, the anchor: starting the interpreter at all;
- the commands that run no flow (help, artifacts, lineage, showing and comparing evaluations): they
  import no torch, Lightning or Prefect, and the goal is under a second;
- a flow that does nothing (`python bench/cli.py --empty-flow`), with a Prefect server running:
  what any flow run costs in Prefect alone (its import, the run's API calls, its heartbeat thread),
  the floor of the next row;
- a stage command whose artifact is already in the store (`bertflow ingest demo-small ...`), with
  a Prefect server running (`prefect server start`, started here with its own home and database,
  and PREFECT_API_URL set for the command; goal: at most 3 s) and without one, when every run starts
  Prefect's temporary server (no goal: that start-up is Prefect's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

NO_FLOW_GOAL_S = 1.0
CACHED_STAGE_GOAL_S = 3.0
SERVER_START_TIMEOUT_S = 300.0
INGEST = ["ingest", "demo-small", "--validation-fraction", "0.1"]  # the store's corpus


def bertflow() -> list[str]:
    """The console script beside this interpreter, as a user runs it (else the module)."""
    script = Path(sys.executable).with_name("bertflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bertflow.flows.cli"]


def build_store(root: Path) -> tuple[str, str]:
    """(store URL, evaluation id) of a store made with the library, in a child process: this one
    stays light and the training's output is kept out of the table (shown if it fails)."""
    done = subprocess.run(
        [sys.executable, __file__, "--build-store", str(root)], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"building the store failed:\n{done.stdout}{done.stderr}")
    made = json.loads(done.stdout.strip().splitlines()[-1])
    return made["store"], made["evaluation"]


def _build_store_here(root: Path) -> dict[str, str]:
    from bertflow.model.evaluation.stage import EvaluateConfig, run_evaluation
    from bertflow.model.evaluation.task_spec import TaskSpec
    from bertflow.model.training.config import TrainConfig
    from bertflow.model.training.plan import plan_pretrain
    from bertflow.model.training.train import train
    from bertflow.pipeline.core.store import ArtifactStore
    from bertflow.pipeline.ingest.stage import IngestConfig, ingest
    from bertflow.pipeline.shards.stage import ShardConfig, make_shards
    from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer

    store = ArtifactStore(str(root / "store"))
    task = root / "task.jsonl"
    task.write_text(
        "".join(
            json.dumps(
                {"text": f"the nation saw {'peace' if i % 2 else 'war'} in {i}", "label": i % 2}
            )
            + "\n"
            for i in range(40)
        )
    )
    training = TrainConfig(
        preset="tiny",
        max_steps=12,
        batch_size=16,
        lr=1e-3,
        warmup_steps=2,
        log_every=6,
        val_every=6,
        val_batches=2,
        checkpoint_every=12,
        num_workers=0,
        accelerator="cpu",
        devices="1",
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout ends with the JSON line alone
        corpus = ingest(store, IngestConfig(sources=["demo-small"], validation_fraction=0.1))
        vocabulary = TokenizerConfig(vocab_size=2000, limit_alphabet=200)
        tokenizer = make_tokenizer(store, corpus.manifest.id, vocabulary)
        sharding = ShardConfig(max_seq_len=64, num_shards=4, num_validation_shards=2)
        shards = make_shards(store, corpus.manifest.id, tokenizer.manifest.id, sharding)
        outcome = train(store, plan_pretrain(store, shards.manifest.id, training), root / "run")
        assert outcome.published is not None
        evaluation = run_evaluation(
            store,
            outcome.published.manifest.id,
            EvaluateConfig(
                tasks=[TaskSpec(path=str(task))],
                seeds=1,
                epochs=1,
                baselines=[],
                intrinsic_max_batches=1,
                max_seq_len=32,
                device="cpu",
            ),
        )
    return {"store": store.url, "evaluation": evaluation.manifest.id}


def _empty_flow() -> None:
    """A flow that does nothing: what any flow run costs with Prefect alone (the floor of a
    cached stage)."""
    from prefect import flow

    @flow(name="bertflow-bench-empty")
    def empty() -> None:
        pass

    empty()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port with its own home and database, until the
    block ends; yields its PREFECT_API_URL."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(api_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        yield api_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def median_seconds(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall seconds of `argv` as a fresh process, after one untimed warm-up run."""
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(
            argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def goal(seconds: float, limit: float | None, strict: bool) -> str:
    if limit is None:
        return "—"
    met = seconds < limit if strict else seconds <= limit
    return f"{'<' if strict else '<='} {limit:g} s: {'met' if met else 'missed'}"


def main() -> None:
    if sys.argv[1:2] == ["--build-store"]:
        print(json.dumps(_build_store_here(Path(sys.argv[2]))))
        return
    if sys.argv[1:2] == ["--empty-flow"]:
        _empty_flow()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (median)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bertflow-bench-cli-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        store_url, evaluation = build_store(root)
        built_s = time.perf_counter() - started
        print(
            f"store: {store_url} (built in {built_s:.0f} s); {os.cpu_count()} CPUs, load "
            f"average {os.getloadavg()[0]:.1f}\n",
            flush=True,
        )
        base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        base["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        store = ["--store", store_url]
        no_flow = [
            ["--help"],
            ["pretrain", "--help"],
            [*store, "artifacts", "ls"],
            [*store, "lineage", evaluation],
            [*store, "evaluate", "show", evaluation],
            [*store, "evaluate", "compare", evaluation, evaluation],
        ]
        rows = [
            (
                "python -c pass",
                median_seconds([sys.executable, "-c", "pass"], base, args.runs),
                None,
                True,
            )
        ]
        for argv in no_flow:
            shown = " ".join("ID" if a == evaluation else a for a in argv if a not in store)
            seconds = median_seconds([*bertflow(), *argv], base, args.runs)
            rows.append((f"bertflow {shown}", seconds, NO_FLOW_GOAL_S, True))
        cached = f"bertflow {' '.join(INGEST)} (cached)"
        with prefect_server(root / "server") as api_url:
            served = {**base, "PREFECT_API_URL": api_url}
            seconds = median_seconds([sys.executable, __file__, "--empty-flow"], served, args.runs)
            rows.append(
                (
                    "python bench/cli.py --empty-flow (Prefect's floor), server running",
                    seconds,
                    None,
                    False,
                )
            )
            seconds = median_seconds([*bertflow(), *store, *INGEST], served, args.runs)
            rows.append((f"{cached}, Prefect server running", seconds, CACHED_STAGE_GOAL_S, False))
        no_server = {**base, "PREFECT_HOME": str(root / "temporary-server")}
        seconds = median_seconds([*bertflow(), *store, *INGEST], no_server, args.runs)
        rows.append((f"{cached}, temporary server", seconds, None, False))

    anchor = rows[0][1]
    print(f"median wall seconds of {args.runs} runs, each a fresh process:")
    print("| command | median s | x `python -c pass` | goal |")
    print("|---|---:|---:|---|")
    for name, seconds, limit, strict in rows:
        print(
            f"| `{name}` | {seconds:.2f} | {seconds / anchor:.0f} | "
            f"{goal(seconds, limit, strict)} |"
        )


if __name__ == "__main__":
    main()

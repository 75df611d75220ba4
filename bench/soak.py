"""Load and faults, bounded in count and time, everything on 127.0.0.1: do runs complete, fail
clearly, and leave nothing torn or behind?

    python bench/soak.py [--jobs 8] [--rounds 2] [--workdir DIR]

Every stage runs as users run it, `python -m bertflow.flows.cli ...` in a process of its own,
against one local Prefect server (`prefect server start`, as tests/prefect_server.py starts it)
and, for the S3 scenario, moto's S3 server in this process (stopped and started again on the
same port, it keeps its buckets). Each job is a chain: ingest demo-small, train a tokenizer,
shard. Scenarios:

a. overlap: --jobs chains at once for --rounds rounds: half with the same configs on store A
   (the same ids, published by whoever is first), a quarter with other configs on store A, a
   quarter on store B;
b. S3 restart: one chain on an `s3://` store, the S3 server stopped as soon as the chain's first
   object lands (a publish under way) and started again 5 s later; then the chain again;
c. Prefect restart: one chain with the Prefect server stopped 2 s into its ingest and started
   again 5 s later; then the chain again.

Printed per scenario: chains run, completed, failed with a clear error (the command's last line
`bertflow <stage>: error: ...`), failed otherwise, and, over the scenario's stores, torn
artifacts (`artifacts verify` finds a file that differs), leftovers (`artifacts gc --dry-run`),
and whether the rerun after the fault completed. Goal: nothing torn, no leftovers, every failure
clear, every rerun complete.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from prefect_server import PrefectServer, _free_port  # noqa: E402

from bertflow.pipeline.core.store import ArtifactStore  # noqa: E402

CLI = [sys.executable, "-m", "bertflow.flows.cli"]
TIMEOUT_S = 600


@dataclass
class Outcome:
    completed: bool
    clear: bool  # failed with a `bertflow <stage>: error:` last line
    said: str  # the last stderr line of a failure


@dataclass
class Tally:
    runs: int = 0
    completed: int = 0
    clear: int = 0
    unclear: list[str] = field(default_factory=list)
    rerun: str = "—"

    def add(self, outcome: Outcome) -> None:
        self.runs += 1
        if outcome.completed:
            self.completed += 1
        elif outcome.clear:
            self.clear += 1
        else:
            self.unclear.append(outcome.said)


def stage(env: dict[str, str], store: str, *argv: str) -> tuple[dict | None, Outcome]:
    """One CLI stage; its --json result (None when it failed) and how it ended."""
    done = subprocess.run(
        [*CLI, "--store", store, *argv, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1]), Outcome(True, False, "")
    lines = done.stderr.strip().splitlines() or ["(nothing on stderr)"]
    clear = lines[-1].startswith(f"bertflow {argv[0]}: error: ")
    return None, Outcome(False, clear, lines[-1][:300])


def chain(env: dict[str, str], store: str, variant: int) -> Outcome:
    """ingest demo-small -> tokenizer -> shard; `variant` changes the configs (and so the ids)."""
    corpus, outcome = stage(
        env,
        store,
        "ingest",
        "demo-small",
        "--workers",
        "1",
        "--min-sentence-chars",
        str(10 + variant),
    )
    if corpus is None:
        return outcome
    tokenizer, outcome = stage(
        env, store, "tokenizer", "--corpus", corpus["id"], "--vocab-size", str(1000 + 100 * variant)
    )
    if tokenizer is None:
        return outcome
    _, outcome = stage(
        env,
        store,
        "shard",
        "--corpus",
        corpus["id"],
        "--tokenizer",
        tokenizer["id"],
        "--max-seq-len",
        "64",
        "--num-shards",
        "2",
        "--workers",
        "1",
    )
    return outcome


def damage(env: dict[str, str], stores: list[str]) -> tuple[int, int]:
    """(torn artifacts, leftover folders) over `stores`."""
    torn, leftovers = 0, set()
    for url in stores:
        store = ArtifactStore(url)
        torn += sum(1 for m in store.list() if store.verify(m.id))
        done = subprocess.run(
            [*CLI, "artifacts", "gc", "--dry-run", "--store", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        found = [line for line in done.stdout.splitlines() if line.startswith("would remove /")]
        leftovers.update(found)
    return torn, len(leftovers)  # $TMPDIR is shared: a folder there is counted once


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


def overlap(env: dict[str, str], root: Path, jobs: int, rounds: int) -> tuple[Tally, list[str]]:
    stores = [str(root / "store-a"), str(root / "store-b")]
    plan = [(stores[0], 0)] * (jobs // 2) + [(stores[0], 1 + i) for i in range(jobs // 4)]
    plan += [(stores[1], i) for i in range(jobs - len(plan))]
    tally = Tally()
    for _ in range(rounds):
        with ThreadPoolExecutor(jobs) as pool:
            for outcome in pool.map(lambda job: chain(env, *job), plan):
                tally.add(outcome)
    return tally, stores


def s3_restart(env: dict[str, str], moto: list[ThreadedMotoServer], port: int) -> Tally:
    """The S3 server stopped the moment the chain's first object lands in the store (the corpus
    publish has begun: its files go up before its manifest), started again 5 s later."""
    bucket = "bertflow-soak"
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/store"

    def restart_when_publishing() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if client.list_objects_v2(Bucket=bucket, Prefix="store/").get("KeyCount"):
                break
            time.sleep(0.01)
        moto[0].stop()
        time.sleep(5)
        moto[0] = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto[0].start()

    tally = Tally()
    fault = threading.Thread(target=restart_when_publishing, daemon=True)
    fault.start()
    tally.add(chain(env, store, 7))
    fault.join()
    rerun = chain(env, store, 7)
    tally.rerun = "completed" if rerun.completed else f"failed: {rerun.said}"
    return tally


def prefect_restart(env: dict[str, str], server: PrefectServer, store: str) -> Tally:
    def restart() -> None:
        server.stop()
        time.sleep(5)
        server.start()

    tally = Tally()
    fault = later(2.0, restart)
    tally.add(chain(env, store, 9))
    fault.join()
    rerun = chain(env, store, 9)
    tally.rerun = "completed" if rerun.completed else f"failed: {rerun.said}"
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bertflow-soak-") as tmp:
        root = args.workdir or Path(tmp)
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        server = PrefectServer(root / "prefect")
        (root / "prefect").mkdir(exist_ok=True)
        server.start()
        port = _free_port()
        moto = [ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)]
        moto[0].start()
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PREFECT_API_URL": server.api_url,
            "TMPDIR": str(root / "tmp"),
            "AWS_ACCESS_KEY_ID": "soak",
            "AWS_SECRET_ACCESS_KEY": "soak",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        rows = []
        try:
            started = time.monotonic()
            tally, stores = overlap(env, root, args.jobs, args.rounds)
            rows.append(
                (
                    f"a. {args.jobs} chains at once x {args.rounds}",
                    tally,
                    stores,
                    time.monotonic() - started,
                )
            )
            started = time.monotonic()
            tally = s3_restart(env, moto, port)
            rows.append(
                (
                    "b. S3 server restarted mid-chain",
                    tally,
                    ["s3://bertflow-soak/store"],
                    time.monotonic() - started,
                )
            )
            started = time.monotonic()
            store = str(root / "store-c")
            tally = prefect_restart(env, server, store)
            rows.append(
                (
                    "c. Prefect server restarted mid-chain",
                    tally,
                    [store],
                    time.monotonic() - started,
                )
            )
            print(
                "\n| scenario | chains | completed | failed, clear error | failed, unclear | "
                "torn | leftovers | rerun | seconds |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
            met = True
            for name, t, urls, seconds in rows:
                torn, leftovers = damage(env, urls)
                met &= not (torn or leftovers or t.unclear) and t.rerun in ("—", "completed")
                print(
                    f"| {name} | {t.runs} | {t.completed} | {t.clear} | {len(t.unclear)} | "
                    f"{torn} | {leftovers} | {t.rerun} | {seconds:.0f} |"
                )
            for name, t, _, _ in rows:
                for said in t.unclear:
                    print(f"\n{name}, an unclear failure: {said}")
            print(
                f"\ngoal: nothing torn, no leftovers, every failure clear, every rerun "
                f"complete: {'met' if met else 'NOT met'}"
            )
        finally:
            moto[0].stop()
            server.stop()


if __name__ == "__main__":
    main()

"""The trainer as a supervised process: one side launches `python -m bertflow.model.training` in
its own session and streams its output, the other (the trainer) dies with its launcher.

The trainer runs in a new session, so its whole process group (local DDP ranks, loader workers)
can be signalled at once: when the launcher is interrupted (a cancelled or timed-out Prefect run
raises in the flow process), the group is terminated, then killed; if the launcher itself is
killed outright, the trainer notices its parent is gone and kills its group. Progress comes back
as stdout lines that start with `PROGRESS_PREFIX`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertflow.model.training.plan import PretrainPlan, clear_run
from bertflow.pipeline.core.store import ArtifactStore

PROGRESS_PREFIX = "bertflow-progress "  # the trainer's stdout lines that carry progress (JSON)
WATCH_PARENT_ENV = "BERTFLOW_WATCH_PARENT"  # set: the trainer dies with its launcher
KILL_GRACE_S = 10.0
TAIL_LINES = 40  # of the trainer's output, quoted when it fails


def training_command(
    store: ArtifactStore, plan: PretrainPlan, run_dir: Path, resume: bool, flow_run_id: str | None
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "bertflow.model.training",
        "--shards",
        plan.shards.id,
        "--store",
        store.url,
        "--run-dir",
        str(run_dir),
        "--config-json",
        plan.config.model_dump_json(),
    ]
    if resume:
        command.append("--resume")
    if flow_run_id:
        command += ["--flow-run-id", str(flow_run_id)]
    return command


def run_training(
    store: ArtifactStore,
    plan: PretrainPlan,
    run_dir: Path,
    *,
    resume: bool = False,
    flow_run_id: str | None = None,
    on_progress: Callable[[dict[str, Any]], None] = lambda record: None,
    on_line: Callable[[str], None] = print,
) -> None:
    """Run training to the end in its own process group; raise if it fails. Each output line
    goes to `on_line`, each progress record to `on_progress`. However this call ends (an
    exception raised into it included), the group is stopped and the run folder tidied."""
    command = training_command(store, plan, run_dir, resume, flow_run_id)
    env = {**os.environ, WATCH_PARENT_ENV: "1", "PYTHONUNBUFFERED": "1"}
    on_line(f"training {plan.artifact_id} in {run_dir}: {' '.join(command[:3])} ...")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=env,
        start_new_session=True,
    )
    published = False
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line.startswith(PROGRESS_PREFIX):
                on_progress(json.loads(line[len(PROGRESS_PREFIX) :]))
                continue
            tail.append(line)
            if line:
                on_line(line)
        code = process.wait()
        published = code == 0 and store.get(plan.artifact_id) is not None
    finally:
        stop_group(process)
        on_line(clear_run(run_dir, published))  # a cancelled run's leftovers too
    if code != 0:
        last = "\n".join(tail)
        raise RuntimeError(f"training {plan.artifact_id} failed (exit {code}):\n{last}")


def stop_group(process: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the process's group, then SIGKILL whatever is left after `grace_s`."""
    if process.poll() is not None and not _group_alive(process.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(process.pid):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent() -> None:
    """The trainer's side: if the launcher goes away (killed, even by SIGKILL), take this whole
    process group (all local ranks and loader workers) down with it."""
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

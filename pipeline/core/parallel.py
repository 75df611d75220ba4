"""Running a stage's tasks in a process pool, with progress reported back from the workers.

A task function takes (task, report) and reports (bytes, files, documents) done as it goes; with
one worker the tasks run in this process, so the results never depend on the worker count.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import queue
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

from bertflow.pipeline.core.progress import BYTES, Progress

Report = Callable[[int, int, int], None]
# -- running tasks --------------------------------------------------------------------------------

_worker_queue: Any = None
PARENT_POLL_S = 0.5


def _init_worker(progress_queue: Any, parent: int) -> None:
    global _worker_queue
    _worker_queue = progress_queue
    _die_with(parent)
    # The processes already use the cores: a tokenizers thread pool in each would oversubscribe
    # them (a spawned worker has not started that pool yet, so this takes effect).
    os.environ["RAYON_NUM_THREADS"] = "1"
    # stages keep a spill file open per output bucket in each task
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _die_with(parent: int) -> None:
    """Exit as soon as `parent` is gone. A pool's workers outlive a parent killed with SIGKILL
    (they wait on its queue forever, and keep multiprocessing's resource tracker alive with
    them); a daemon thread polling the parent's pid ends them within PARENT_POLL_S."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="bertflow-watch-parent", daemon=True).start()


def _queue_report(bytes_done: int, files_done: int, documents: int) -> None:
    _worker_queue.put((bytes_done, files_done, documents))


def _call_in_worker(fn: Callable[[Any, Any], Any], task: Any) -> Any:
    return fn(task, _queue_report)


def run_tasks(
    fn: Callable[[Any, Any], Any], tasks: list[Any], workers: int, progress: Progress | None
):
    """Run fn(task, report) for every task, in order of tasks; in-process when workers == 1."""

    def advance(bytes_done: int, files_done: int, documents: int) -> None:
        if progress is not None:  # its total is in bytes, or in tasks (each reports a file)
            done = bytes_done if progress.state.unit == BYTES else files_done
            progress.advance(done, files=files_done, documents=documents)

    if workers == 1 or len(tasks) <= 1:
        return [fn(task, advance) for task in tasks]
    context = multiprocessing.get_context("spawn")  # never fork a process that runs Prefect threads
    progress_queue = context.Queue()
    with cf.ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(progress_queue, os.getpid()),
    ) as pool:
        futures = [pool.submit(_call_in_worker, fn, task) for task in tasks]
        try:
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_EXCEPTION)
                _drain(progress_queue, advance)
                for future in done:
                    future.result()  # raises the first failure
            _drain(progress_queue, advance)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        return [f.result() for f in futures]


def _drain(progress_queue: Any, advance: Callable[[int, int, int], None]) -> None:
    while True:
        try:
            advance(*progress_queue.get_nowait())
        except queue.Empty:
            return

"""Serving deployments with Prefect's runner, and exiting when it loses its Prefect server.

Prefect 3.8.8's runner does not recover from losing its server for more than a few seconds. Its
cancellation observer retries the events websocket about ten times (~10 s), then falls back to
polling with a client that has never sent a request and so does not retry a refused connection:
three failed polls and the observer stops for good ("Cancellation polling task failed ... flow run
cancellation will fail"; the failure callback meant to handle that raises NoEventLoopError
itself). The runner keeps picking up runs (its poller's client retries, for about three minutes
of outage; then the runner stops), but none of them can be cancelled. Reviving the observer means
rebuilding the runner's private parts, so `serve` exits instead, for a supervisor (systemd,
compose, Kubernetes) to start a fresh process.

A thread checks the server's `/health` every few seconds. The server is lost once it has been
unreachable for `lost_after_s`, or as soon as the runner logs that cancellation polling failed.
Then the thread waits, up to `return_within_s`, for the server to come back (so that the shutdown
reaches it, and a restarted `bertflow serve` registers at once instead of failing in a loop), and
stops serving as Ctrl-C does; `serve` returns `SERVER_LOST`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import httpx
from prefect import serve as prefect_serve
from prefect.deployments.runner import RunnerDeployment

SERVER_LOST = os.EX_TEMPFAIL  # 75: a temporary failure, for a supervisor to restart
# What Prefect's FlowRunCancellingObserver logs (at ERROR) when its polling loop gives up.
OBSERVER_LOGGER = "prefect.FlowRunCancellingObserver"
OBSERVER_FAILED = "Cancellation polling task failed"


@dataclass(frozen=True)
class ServerWatch:
    check_every_s: float = 2.0
    """How often the server's /health is checked."""
    timeout_s: float = 5.0
    """How long one check waits for an answer before the server counts as unreachable."""
    lost_after_s: float = 10.0
    """How long the server is unreachable before it is lost (the runner's websocket is gone)."""
    return_within_s: float = 300.0
    """How long to wait, once it is lost, for the server to come back before exiting anyway."""
    shutdown_within_s: float = 60.0
    """How long the runner's shutdown may take before the process exits without it."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"ServerWatch.{name}: must be positive, got {value}")


def serve(
    deployments: list[RunnerDeployment], api_url: str, watch: ServerWatch | None = None
) -> int:
    """Serve `deployments` with `prefect.serve` until Ctrl-C (0), or until the server at
    `api_url` is lost (`SERVER_LOST`, after a message on stderr saying so)."""
    watcher = _Watcher(api_url, watch or ServerWatch())
    observer_log = logging.getLogger(OBSERVER_LOGGER)
    observer_log.addHandler(watcher.observer_failures)
    watcher.start()
    failed_on: str | None = None
    try:
        try:
            prefect_serve(*deployments)  # returns quietly from the watch's interrupt
        except (Exception, KeyboardInterrupt) as e:
            # The runner may give up on a refused connection before the watch counts the
            # server as lost (its shutdown then fails to pause the deployments): that is the
            # loss too.
            lost_connection = connection_lost(e)
            failed_on = f"serving failed on {lost_connection}" if lost_connection else None
            if watcher.lost is None and failed_on is None:
                raise  # not the server's loss: as serving did before
        finally:
            watcher.stop()  # from here on the watch interrupts nothing
            observer_log.removeHandler(watcher.observer_failures)
    except KeyboardInterrupt:
        # The watch's interrupt, landing after the runner had stopped on its own (it handles
        # the ones that come while it serves); a user's Ctrl-C still stops as it did.
        if not watcher.interrupted:
            raise
    lost = watcher.lost or failed_on
    if lost is None:
        return 0
    print(lost_message(api_url, lost), file=sys.stderr, flush=True)
    return SERVER_LOST


def connection_lost(error: BaseException) -> str | None:
    """What says that `error` came from a connection to the server failing (httpx's transport
    errors, in its cause, context or exception group), or None."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, httpx.TransportError):
            return f"a lost connection: {type(e).__name__}: {e}"
        pending.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        if isinstance(e, BaseExceptionGroup):
            pending.extend(e.exceptions)
    return None


def lost_message(api_url: str, why: str) -> str:
    return (
        f"bertflow serve: lost the Prefect server at {api_url} ({why}); exiting so a supervisor "
        "can restart it"
    )


def unreachable(api_url: str, timeout_s: float) -> str | None:
    """Why the server at `api_url` does not answer its /health, or None when it does. Any answer
    below 500 (a 401 to a check without credentials too) means it is up."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as e:
        return None if e.code < 500 else f"/health answered {e.code}"
    except OSError as e:  # refused, reset, timed out, no such host
        return str(getattr(e, "reason", e))


class _ObserverFailures(logging.Handler):
    """Sets `failed` when Prefect's cancellation observer logs that its polling gave up."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.failed = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(OBSERVER_FAILED):
            self.failed.set()


class _Watcher(threading.Thread):
    """Once the server is lost, and back (or given up on), interrupts the main thread as Ctrl-C
    does; if the shutdown then hangs, ends the process."""

    def __init__(self, api_url: str, watch: ServerWatch):
        super().__init__(name="bertflow-server-watch", daemon=True)
        self.api_url, self.watch = api_url, watch
        self.observer_failures = _ObserverFailures()
        self.lost: str | None = None
        self.interrupted = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # so that no interrupt comes once stop() has returned

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()

    def _interrupt(self) -> bool:
        """Interrupt the main thread as Ctrl-C does, unless serving has already stopped."""
        with self._lock:
            if self._stopped.is_set():
                return False
            self.interrupted = True
            os.kill(os.getpid(), signal.SIGINT)  # prefect.serve shuts down as on Ctrl-C
            return True

    def run(self) -> None:
        why = self._wait_until_lost()
        if why is None:
            return
        self.lost = why
        wait_s = self.watch.return_within_s
        print(
            f"bertflow serve: lost the Prefect server at {self.api_url} ({why}); serving "
            f"stops once it is back (waiting up to {wait_s:g} s)",
            file=sys.stderr,
            flush=True,
        )
        back = self._wait_until_back()
        if self._stopped.is_set():  # the runner stopped on its own meanwhile
            return
        if not back:
            self.lost += f"; not back after {wait_s:g} s"
        if not self._interrupt():
            return
        if not self._stopped.wait(self.watch.shutdown_within_s):
            why = f"{self.lost}; shutdown unfinished after {self.watch.shutdown_within_s:g} s"
            print(lost_message(self.api_url, why), file=sys.stderr, flush=True)
            os._exit(SERVER_LOST)

    def _wait_until_lost(self) -> str | None:
        """Why the server is lost, or None once serving has stopped."""
        down_since: float | None = None
        while not self._stopped.wait(self.watch.check_every_s):
            if self.observer_failures.failed.is_set():
                return "Prefect's runner gave up polling it for cancellations"
            why = unreachable(self.api_url, self.watch.timeout_s)
            if why is None:
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since >= self.watch.lost_after_s:
                return f"unreachable for {self.watch.lost_after_s:g} s: {why}"
        return None

    def _wait_until_back(self) -> bool:
        deadline = time.monotonic() + self.watch.return_within_s
        while time.monotonic() < deadline and not self._stopped.wait(self.watch.check_every_s):
            if unreachable(self.api_url, self.watch.timeout_s) is None:
                return True
        return False

"""Progress of long stages: a terminal bar plus throttled callbacks (Prefect, logs).

Stages call `Progress.advance`; they never know who is watching. The flows layer passes
callbacks that update a Prefect progress artifact and write log lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm


@dataclass
class ProgressState:
    stage: str
    bytes_total: int
    files_total: int
    bytes_done: int = 0
    files_done: int = 0
    documents: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        """Done share by bytes, or by files (tasks) for stages that do not count bytes."""
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        return min(1.0, self.files_done / self.files_total) if self.files_total else 0.0

    @property
    def mb_per_s(self) -> float:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return self.bytes_done / elapsed / 1e6

    def describe(self) -> str:
        return (
            f"{self.stage}: {self.fraction:.0%} · files {self.files_done}/{self.files_total}"
            f" · {self.documents:,} documents · {self.mb_per_s:.1f} MB/s"
        )


ProgressCallback = Callable[[ProgressState], None]


class Progress:
    """Counts work done; draws a tqdm bar on a terminal and calls callbacks every `every_s`."""

    def __init__(
        self,
        stage: str,
        bytes_total: int,
        files_total: int,
        callbacks: Sequence[ProgressCallback] = (),
        every_s: float = 2.0,
        bar: bool | None = None,
    ):
        self.state = ProgressState(stage, bytes_total, files_total)
        self.callbacks = list(callbacks)
        self.every_s = every_s
        self._last_call = 0.0
        show_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = tqdm(
            total=bytes_total,
            unit="B",
            unit_scale=True,
            desc=stage,
            disable=not show_bar,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def advance(self, bytes_done: int = 0, files_done: int = 0, documents: int = 0) -> None:
        s = self.state
        s.bytes_done += bytes_done
        s.files_done += files_done
        s.documents += documents
        self._bar.update(bytes_done)
        self._bar.set_postfix(
            files=f"{s.files_done}/{s.files_total}", docs=s.documents, refresh=False
        )
        now = time.monotonic()
        if now - self._last_call >= self.every_s:
            self._last_call = now
            self._notify()

    def close(self) -> None:
        self._bar.close()
        self._notify()

    def _notify(self) -> None:
        for callback in self.callbacks:
            callback(self.state)

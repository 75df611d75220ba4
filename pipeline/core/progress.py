"""Progress of long work, one type for every stage: a terminal bar plus throttled callbacks
(a Prefect progress artifact, log lines).

Stages count what they do with `Progress.advance` (bytes read, tasks or steps done) and name
what they are doing with `Progress.phase`; they never know who is watching. The flows layer
passes the callbacks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

BYTES = "B"  # the unit of a total counted in bytes: the bar and the rate then say MB


@dataclass
class ProgressState:
    """What callbacks see: how much of the stage's total is done, and what it is doing."""

    stage: str
    total: int
    unit: str  # BYTES, "task", "step", ...
    done: int = 0
    files: int = 0
    documents: int = 0
    phase: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        """The done share; a stage with nothing to count (an evaluation with no work, a corpus of
        empty files) is all done."""
        return min(1.0, self.done / self.total) if self.total else 1.0

    def describe(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        parts = [f"{self.stage}: {self.fraction:.0%}"]
        if self.phase:
            parts.append(self.phase)
        if self.unit == BYTES:
            parts.append(f"{self.done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB")
        else:
            parts.append(f"{self.done:,}/{self.total:,} {self.unit}s")
        if self.files:
            parts.append(f"{self.files:,} files")
        if self.documents:
            parts.append(f"{self.documents:,} documents")
        if self.unit == BYTES:
            parts.append(f"{self.done / elapsed / 1e6:.1f} MB/s")
        return " · ".join(parts)


ProgressCallback = Callable[[ProgressState], None]


class Progress:
    """Counts work done; draws a tqdm bar on a terminal and calls callbacks every `every_s`
    (and when a phase starts, and at the end)."""

    def __init__(
        self,
        stage: str,
        total: int,
        unit: str = "task",
        callbacks: Sequence[ProgressCallback] = (),
        every_s: float = 2.0,
        bar: bool | None = None,
    ):
        self.state = ProgressState(stage, total, unit)
        self.callbacks = list(callbacks)
        self.every_s = every_s
        self._last_call = 0.0
        show_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = tqdm(
            total=total,
            unit=unit,
            unit_scale=unit == BYTES,
            desc=stage,
            disable=not show_bar,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def advance(self, done: int = 0, files: int = 0, documents: int = 0, **shown: str) -> None:
        """`done` more of the total; `files` and `documents` are counted beside it; `shown`
        (such as a loss) goes on the bar."""
        s = self.state
        s.done += done
        s.files += files
        s.documents += documents
        self._bar.update(done)
        postfix = {**({"docs": s.documents} if s.documents else {}), **shown}
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        if time.monotonic() - self._last_call >= self.every_s:
            self._notify()

    def step(self) -> None:
        """One more step: for the callers that take a callback of no arguments."""
        self.advance(1)

    def phase(self, name: str) -> None:
        self.state.phase = name
        self._bar.set_description(name, refresh=False)
        self._notify()

    def close(self) -> None:
        self._bar.close()
        self._notify()

    def _notify(self) -> None:
        self._last_call = time.monotonic()
        for callback in self.callbacks:
            callback(self.state)

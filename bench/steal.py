"""How much of a run's CPU the hypervisor gave to other machines: on a shared virtual machine
the same work takes longer while its neighbours are busy, and a benchmark's seconds mean little
without this beside them.

    with Steal() as steal:
        work()
    steal.share  # stolen ticks / all ticks during the block; None off Linux
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType


def cpu_ticks() -> tuple[int, int] | None:
    """(stolen, total) CPU ticks since boot from /proc/stat's first line; None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    ticks = [int(value) for value in fields[1:9]]
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


class Steal:
    """The share of CPU ticks stolen while the block ran."""

    def __init__(self) -> None:
        self.share: float | None = None
        self._before: tuple[int, int] | None = None

    def __enter__(self) -> Steal:
        self._before = cpu_ticks()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        after = cpu_ticks()
        if self._before is not None and after is not None and after[1] > self._before[1]:
            self.share = (after[0] - self._before[0]) / (after[1] - self._before[1])

"""CPU used by other processes during a timing test, so real-time bounds can say why they relax."""

from __future__ import annotations

import time

import psutil


class CpuWatch:
    """How much CPU *other* processes used while a timing test ran.

    Real-time assertions (fps, enhanced share) only mean something on a machine that is not
    busy with someone else's work: CI runs alone, a shared development machine may not.
    ``busy`` says the measurement was starved, so a test can fall back to a weaker bound
    and say why, instead of failing on another process's load.
    """

    def __init__(self, busy_cores: float = 0.5) -> None:
        self.busy_cores = busy_cores
        self.others_cores = 0.0
        self._t0 = 0.0
        self._sys0 = 0.0
        self._own0 = 0.0

    @staticmethod
    def _system_busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    @staticmethod
    def _own() -> float:
        p = psutil.Process()
        total = sum(p.cpu_times()[:4])  # user, system, children_user, children_system
        for c in p.children(recursive=True):
            try:
                total += sum(c.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    def start(self) -> CpuWatch:
        self._t0, self._sys0, self._own0 = time.monotonic(), self._system_busy(), self._own()
        return self

    def stop(self) -> CpuWatch:
        dt = max(time.monotonic() - self._t0, 1e-6)
        others = (self._system_busy() - self._sys0) - (self._own() - self._own0)
        self.others_cores = max(0.0, others / dt)
        return self

    @property
    def busy(self) -> bool:
        return self.others_cores > self.busy_cores

    def note(self) -> str:
        return f"other processes used {self.others_cores:.2f} cores during the measurement" + (
            " (machine busy: real-time bounds relaxed)" if self.busy else "")

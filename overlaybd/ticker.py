"""A clock a busy loop can read without a system call.

Reading the clock is a system call wherever the kernel gives processes no vDSO clock: in the
UML guests the kernel tests and benchmarks run in (~30 us each), and in VMs whose clocksource
is not the TSC.  The worker pool's supervision (heartbeat ages, delayed restarts) needs only a
rough sense of time, once every quarter heartbeat, but it is looked at after every batch of
completions; a :class:`Ticker` lets it compare an integer instead and read the clock only when
the integer moved.
"""

from __future__ import annotations

import threading


class Ticker:
    """``count`` goes up by one every ``interval`` seconds while the ticker runs (a daemon
    thread that sleeps in between: one wake-up an interval, whatever the load), and then
    ``on_tick()`` runs, in that thread (e.g. to wake a loop that sleeps without a timeout)."""

    def __init__(self, interval: float, name: str = "ticker", on_tick=None):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = interval
        self.name = name
        self.count = 0
        self.on_tick = on_tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.count += 1
            if self.on_tick is not None:
                self.on_tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 1.0)

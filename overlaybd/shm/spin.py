"""Looking at a ring for a little while before going to sleep on its eventfd -- only while that
pays.

A sleep and the wake-up that ends it cost two system calls and a context switch on each side;
when the peer answers within microseconds (small reads at depth) a short spin saves all of
that.  When it answers in hundreds of microseconds (1 MiB reads, decompression) every spin is
CPU thrown away, taken from a worker the scheduler may have put on the same CPU.  So each side
keeps a small credit: a spin that saw something earns one (up to ``credit``; from nothing, it
is the one), one that did not costs one, and with no credit left only every ``probe``-th sleep
spins, to notice when spinning pays again.
"""

from __future__ import annotations


class Spin:
    def __init__(self, polls: int, credit: int = 4, probe: int = 16):
        self.polls = polls
        self.max_credit = credit
        self.credit = credit
        self.probe = probe
        self._skipped = 0

    def due(self) -> bool:
        """Whether to spin before this sleep: while spinning has paid, and then every
        ``probe``-th sleep (this call counts the sleeps it declines)."""
        if self.credit > 0:
            return True
        self._skipped += 1
        if self._skipped < self.probe:
            return False
        self._skipped = 0
        return True

    def look(self, ready) -> bool:
        """Call ``ready()`` up to ``polls`` times; True as soon as it is true (which earns a
        credit; finding nothing costs one)."""
        for _ in range(self.polls):
            if ready():
                self.credit = min(max(self.credit, 0) + 1, self.max_credit)
                return True
        self.credit -= 1
        return False

    def __call__(self, ready) -> bool:
        """:meth:`due`, then :meth:`look`: False at once when spinning has not been paying
        (and this is not a probe)."""
        return self.due() and self.look(ready)

"""The stress harness's leak check (stress/fullstack.py): growth of RSS and open fds from the
warm-up window to the end, the supervisor alone and the workers summed."""

from stress import fullstack
from stress.fullstack import LEAK_FDS, WORKERS


def samples(seconds, fds, missing=()):
    """Two samples a second of the supervisor and WORKERS workers, ``fds(t)`` fds each; no
    worker sample at the instants in ``missing`` for worker 0 (killed, not yet replaced)."""
    out = []
    for i in range(seconds * 2):
        t = i / 2
        out.append({"t": t, "proc": "supervisor", "rss": 50 << 20, "fds": 40})
        for w in range(WORKERS):
            if w == 0 and t in missing:
                continue
            out.append({"t": t, "proc": "worker", "rss": 40 << 20, "fds": fds(t)})
    return out


def test_a_killed_workers_gap_in_the_warm_window_is_not_growth():
    warm = [t / 2 for t in range(10, 30)]          # 5-15 s: the warm window of a 60 s run
    got = fullstack._leaks(samples(60, lambda t: 50, missing=warm[:12]), 60)
    assert got["workers"] == {"rss_growth_mb": 0.0, "fds_growth": 0.0, "leak": False}
    assert got["supervisor"]["leak"] is False


def test_fds_that_keep_growing_are_a_leak():
    got = fullstack._leaks(samples(60, lambda t: 50 + int(t)), 60)
    assert got["workers"]["leak"] is True and got["workers"]["fds_growth"] > LEAK_FDS


def test_a_window_without_all_workers_is_an_error_not_a_pass():
    got = fullstack._leaks(samples(60, lambda t: 50, missing=[t / 2 for t in range(120)]), 60)
    assert got["workers"] == {"error": "no samples"}

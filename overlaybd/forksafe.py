"""What a forked process must not inherit, reset in one way (``os.register_at_fork``).

Workers are forked from the supervisor.  A child starts with one thread: a lock another thread
of the parent held at the fork stays held forever, thread pools have no threads, connection
pools share sockets with the parent.  Each module that keeps such state says here how a child
gets its own, and the reset runs in the child right after the fork, before any code of the
child can use the stale state:

* ``@at_fork_child`` on a module-level function: it runs in every child (in the order the
  modules were imported);
* ``track(obj)`` for an object with such state: ``obj._after_fork_in_child()`` runs in every
  child while ``obj`` is alive (the object is held weakly).

A reset must not block, log or fail: it drops or replaces state, nothing more.  Fork is the
only start method that needs this; spawn and forkserver children inherit no Python state.
"""

import os
import weakref

_objects = weakref.WeakSet()


def at_fork_child(fn):
    """Run ``fn()`` in the child after every ``os.fork``; returns ``fn`` (a decorator)."""
    os.register_at_fork(after_in_child=fn)
    return fn


def track(obj):
    """Call ``obj._after_fork_in_child()`` in the child after every fork while ``obj`` lives;
    returns ``obj``."""
    _objects.add(obj)
    return obj


@at_fork_child
def _reset_tracked():
    failed = None
    for obj in list(_objects):
        try:
            obj._after_fork_in_child()
        except Exception as e:          # noqa: BLE001 -- the others still get their reset
            failed = failed or e
    if failed is not None:
        raise failed                    # reported by Python as an unraisable exception

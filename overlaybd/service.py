"""What the service manager sees of overlaybd-tcmu (conf/overlaybd-tcmu.service).

* Readiness: :func:`notify` sends an sd_notify state ("READY=1", "STOPPING=1", ...) as one
  datagram to ``$NOTIFY_SOCKET`` (set by systemd for ``Type=notify``); without it, nothing.
* OOM score: the unit protects the supervisor (``OOMScoreAdjust=-999``) and its children inherit
  that.  :func:`unprotect_oom` gives a worker process the normal score 0 back, so under memory
  pressure the kernel may pick a worker (which the supervisor replaces) rather than another
  process on the machine; the supervisor itself keeps its protection.
"""

from __future__ import annotations

import os
import socket

from loguru import logger


def notify(state: str) -> bool:
    """Send ``state`` to the service manager; False when not run by one (or it cannot be told)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":                  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as e:
        logger.warning("cannot notify the service manager at {} ({}): {}", addr,
                       state.split("\n")[0], e)
        return False


def oom_score_adj(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def unprotect_oom(pid: int) -> None:
    """Give process ``pid`` (a worker just started) the score 0 when we run with a negative one.

    Raising a score needs no privilege; a score of ours that is 0 or higher is left as it is.
    """
    try:
        if oom_score_adj() >= 0:
            return
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("0")
    except (FileNotFoundError, ProcessLookupError):
        pass                            # it exited already: the supervisor sees its sentinel
    except OSError as e:
        logger.warning("cannot reset the OOM score of worker pid {}: {}", pid, e)

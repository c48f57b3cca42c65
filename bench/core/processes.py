"""Whether a process of this host is still running: how a crashed writer's leftovers (a feature cache's
building folder, a tuning trial left RUNNING by a killed worker) are told from a live one's."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` of this host exists (even if it belongs to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Whether a process of this host is still running: how a crashed writer's leftovers (a feature cache's
building folder, a tuning trial left RUNNING by a killed worker) are told from a live one's."""

from __future__ import annotations

import os
import socket


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


def host_name() -> str:
    """This host's name as one field of a file name (dots separate the fields of the names built from it)."""
    return socket.gethostname().replace(".", "_").replace("~", "_")


def owner_tag() -> str:
    """``HOST~PID``: who writes a temporary file or folder, so that only a dead owner's is ever removed."""
    return f"{host_name()}~{os.getpid()}"


def owner_gone(tag: str) -> bool:
    """True when ``HOST~PID`` names a process of this host that has ended (another host's: never known)."""
    host, _, pid = tag.rpartition("~")
    return host == host_name() and pid.isdigit() and not pid_alive(int(pid))

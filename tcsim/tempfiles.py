"""Temporary files of writers that write whole files or none: a result is written to
``.<name>.<pid>.tmp`` beside its final place, then renamed over it (``os.replace`` is atomic), so
a reader sees the old file or the new one, never half of one. A writer killed mid-write leaves
its temporary behind; :func:`remove_stale` deletes those of writers that have stopped, and keeps
those of writers still running (another worker of the same sweep or training grid).

Used by the sweep (tcsim.explore.sweep) and the training runs (tcsim.train.runner).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

STALE_AFTER_S = 3600    # without POSIX signal 0: a temporary untouched this long is left over


def temporary_for(path: Path) -> Path:
    """The temporary name this process writes ``path`` under: ``.<name>.<pid>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomically(path: Path, write) -> None:
    """``write(tmp)`` writes the whole file to :func:`temporary_for` ``path``, which then
    replaces ``path`` (a reader sees the old file or the new one)."""
    tmp = temporary_for(path)
    write(tmp)
    os.replace(tmp, path)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX only: signal 0 checks without signalling, and a
    PermissionError means it exists, owned by someone else; on Windows os.kill would terminate
    it)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:
        return True
    return True


def writer_gone(pid: int, path: Path) -> bool:
    """Whether the process ``pid`` that writes temporary ``path`` has ended. This process's
    own temporaries count as gone (a caller cleans up before it writes). Without POSIX signals
    a file untouched for STALE_AFTER_S counts as left over."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    return not process_exists(pid)


def remove_stale(folder: Path) -> list:
    """Delete the ``.*.tmp`` files in ``folder`` whose writer has stopped (or whose name carries
    no process id); returns their paths, sorted."""
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp")):
        pid = path.name.split(".")[-2]          # .<name>.<pid>.tmp
        if not pid.isdigit() or writer_gone(int(pid), path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed

"""One writer per run folder: a lease on `<folder>/.seqrev.lock`, taken before seqrev writes anything
there and held to the end of the run.

The lease is filelock's `SoftFileLease`: its marker is created with O_CREAT|O_EXCL, which is atomic
on local disks and on the shared file systems Slurm clusters use (NFSv3 and v4, Lustre, GPFS,
BeeGFS), with no mount option needed (unlike flock on Lustre). The marker records the holder's host
and pid, and a thread of the holder refreshes it. A marker whose process is gone from this host
(`kill -9`, a requeued Slurm job's earlier self) is taken over at once, also while the dead process is
still a zombie (its parent has not collected it yet, which filelock counts as alive); one from another
host (a lost node) once LEASE_SECONDS pass without a refresh.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from seqrev.errors import RunDirError

# Imports inside functions: filelock loads only when a folder is locked.

LOCK_FILE = ".seqrev.lock"
LEASE_SECONDS = 60.0  # how long another host waits for a silent holder: several refresh periods



class HeldFolder(NamedTuple):
    """A folder whose lock this process holds, and what its holder says once its log is set up: that it took
    the lock over from a process that is gone (None when the lock was free)."""

    folder: Path
    took_over: str | None = None


class FolderBusy(RunDirError):
    """Another live process holds the folder's lock."""

    def __init__(self, folder: Path, host: str, pid: int) -> None:
        self.folder, self.host, self.pid = folder, host, pid
        super().__init__(f"running elsewhere ({host}, {pid}): {folder}")


def is_secondary_process() -> bool:
    """A process Lightning's DDP started for rank 1 and up: it writes nothing, rank 0 holds the lock."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def requeued_wait() -> float:
    """Seconds to wait for a folder's lease: none, except in a requeued Slurm job (SLURM_RESTART_COUNT),
    whose earlier self may have held it on another node: that lease lapses within LEASE_SECONDS."""
    return LEASE_SECONDS + 5 if os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0") else 0


def exited_here(owner: Any) -> bool:
    """Whether a lock's holder (filelock's owner record) is a process of this host that has exited but is
    still a zombie: its parent has not collected it yet, and `kill(pid, 0)`, filelock's test of life, still
    finds it. The start time recorded in the marker tells it from a later process given the same pid."""
    if owner.hostname.partition("?")[0] != socket.gethostname():  # filelock marks a pid namespace after '?'
        return False
    try:
        stat = Path(f"/proc/{owner.pid}/stat").read_bytes()
    except OSError:  # gone altogether, or no /proc: filelock's own rule decides
        return False
    fields = stat[stat.rfind(b")") + 1:].split()  # after the command name, which may hold spaces
    try:
        started = int(fields[19])  # proc(5): field 22, the start time
    except (IndexError, ValueError):
        return False
    return fields[0] in (b"Z", b"X") and (owner.start is None or owner.start % 2**64 == started)


def break_exited(lease: Any, owner: Any, folder: Path) -> None:
    """Remove the marker an exited holder left, one process of this host at a time: the marker is read
    again under a host-wide lock, so a second process that saw the same zombie never breaks the lock the
    first one has just taken."""
    from filelock import FileLock

    name = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"seqrev-{name}.break"):
        if lease.owner == owner:
            lease.force_break()


@contextmanager
def run_folder_lock(folder: Path) -> Iterator[HeldFolder]:
    """Hold `folder`'s lock for the block; FolderBusy, touching nothing, if a live process holds it. Whoever
    took it passes the HeldFolder down to what runs in the folder, which takes it no second time."""
    from filelock import SoftFileLease, Timeout

    folder = Path(folder).absolute()
    if is_secondary_process():
        yield HeldFolder(folder)
        return
    folder.mkdir(parents=True, exist_ok=True)
    lease = SoftFileLease(folder / LOCK_FILE, timeout=requeued_wait(), lease_duration=LEASE_SECONDS)
    left = lease.owner  # a marker already there belongs to a live process, or to one that died holding it
    if left is not None and exited_here(left):
        break_exited(lease, left, folder)
    try:
        lease.acquire()
    except Timeout:
        owner = lease.owner
        raise FolderBusy(folder, owner.hostname if owner else "unknown host", owner.pid if owner else 0) from None
    took_over = None
    if left is not None and (left.hostname, left.pid) != (socket.gethostname(), os.getpid()):
        took_over = f"took over the lock of a process that is gone ({left.hostname}, {left.pid}): {folder}"
    try:
        yield HeldFolder(folder, took_over)
    finally:
        lease.release()

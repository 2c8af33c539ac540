"""One training per fold folder at a time: a lock file holding the owner's host and PID.

A second ``samunet_train`` on the same fold is refused with a message naming the running process. A lock
left behind by a process that no longer exists (kill -9, power loss) is taken over with a warning.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from samunet.core.errors import SamunetUserError
from samunet.utils.logs import get_logger

log = get_logger()

LOCK_NAME = ".training.lock"
FRESH_LOCK_S = 5.0


class FoldLockedError(SamunetUserError, RuntimeError):
    pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _read_owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class FoldLock:
    """Context manager: ``with FoldLock(fold_folder): train()``."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_owner(self.path)
                if owner is None:
                    if _age_seconds(self.path) < FRESH_LOCK_S:  # its owner may be writing it right now
                        raise FoldLockedError(f"{self.path.parent} is being started by another process "
                                              f"(lock {self.path} is being written)") from None
                    # left by a process killed between create and write, or garbage: stale
                    log.warning("Removing an unreadable lock file %s", self.path)
                elif owner.get("host") != me["host"]:
                    raise FoldLockedError(
                        f"{self.path.parent} is being trained by PID {owner.get('pid')} on host {owner.get('host')}; "
                        f"if that run is dead, delete {self.path}") from None
                elif _process_alive(int(owner.get("pid", -1))) and int(owner["pid"]) != me["pid"]:
                    raise FoldLockedError(
                        f"{self.path.parent} is already being trained by PID {owner['pid']} (lock {self.path}); "
                        "wait for it to finish or stop it first") from None
                else:
                    log.warning("Taking over a stale lock from PID %s (no longer running): %s", owner.get("pid"),
                                self.path)
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise FoldLockedError(f"could not take the lock {self.path}: another process keeps re-creating it")

    def release(self) -> None:
        if self.held:
            owner = _read_owner(self.path)
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "FoldLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

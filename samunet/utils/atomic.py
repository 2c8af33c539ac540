"""Writes that never leave a half-written file: write to a temporary name, then rename into place."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    """The process umask (os.umask can only be read by setting it, so set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# read once at import, before any worker thread could create a file while the mask is briefly changed
_UMASK = _read_umask()


@contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is renamed to ``final_path``.

    The suffix of the final name is kept, so writers that pick a format from the extension work.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final_path.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=f".tmp{suffix}", dir=final_path.parent)
    os.close(fd)
    # mkstemp makes the file 0600; a shared results folder needs the permissions the user's umask gives
    os.chmod(tmp_name, 0o666 & ~_UMASK)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final_path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(data: Any, path: str | os.PathLike, indent: int = 2) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=indent, sort_keys=False)
            f.write("\n")


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy ``source`` to ``target`` through a temporary name (a reader never sees half a file)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(Path(source).read_bytes())


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def write_npy(array, path: str | os.PathLike) -> None:
    import numpy as np  # here, not at the top: every command imports this module, --help included

    with atomic_path(path) as tmp:
        # np.save on an open file keeps the exact name (np.save(str) would append .npy)
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

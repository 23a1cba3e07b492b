"""Atomic writes: a reader, or a run killed mid-write, never sees a half-written file or folder.

- `atomic_write(path, write)`: `write(tmp)` fills a temporary sibling file (`.<name>.<random>.tmp`),
  which then replaces `path` in one `os.replace`.
- `atomic_directory(path)`: a context manager yielding a temporary sibling folder
  (`.<name>.<random>.tmp`) to fill; when the block ends without an error the folder takes the place of
  `path`. An existing `path` stays complete until the new folder is: on Linux the two are swapped in one
  `renameat2(RENAME_EXCHANGE)`; elsewhere (or where the file system refuses it) the old folder is
  renamed aside and the new one renamed in, two renames apart. The old folder is then deleted.
  With `keep_existing=True` (caches several processes may build at once) a folder already at `path`
  when ours is complete is kept and ours discarded: the first complete copy wins, and no reader ever
  sees its folder swapped away.

Temporaries sit next to their target (same file system, so the renames are atomic) and end in `.tmp`,
so a start-up can find what a killed run left behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write `path` through `write(tmp_path)` and an atomic rename; the usual permissions (0666 & ~umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Fill the yielded temporary folder; on success it replaces `path` as one unit, or with
    `keep_existing` it is discarded when a folder is already at `path` (see module doc)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if not path.exists():
            try:
                os.rename(tmp, path)
            except OSError:  # another process renamed its folder in first
                if not (keep_existing and path.is_dir()):
                    raise
        elif keep_existing:
            pass  # the existing folder wins; ours is removed below
        elif _exchange(tmp, path):
            shutil.rmtree(tmp)  # now holds the old folder
        else:
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.", suffix=".tmp"))
            os.rmdir(old)
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

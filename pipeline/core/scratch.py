"""Scratch folders that a crash cannot leave behind for good.

Every folder a stage writes before it publishes (a local store's `.staging/<id>-*`, the spill
folders in $TMPDIR) is made by `scratch_folder`, which holds an exclusive `flock` on a sibling
file, `<folder>.held`, for as long as the stage runs. The kernel drops the lock when the process
ends, however it ends (kill -9 included), so a folder whose lock can be taken belongs to no live
run: `sweep` removes those, and only those. The next run of the same artifact sweeps its own
leftovers; `bertflow artifacts gc` sweeps everything.

The lock sits beside the folder, not in it, because a staging folder is renamed into the artifact
and must carry nothing but the artifact's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HELD_SUFFIX = ".held"
TEMP_PREFIX = "bertflow-"  # every scratch folder bertflow makes in $TMPDIR starts so
# A folder with no lock file is one a run has just made (mkdtemp, then the lock), or one an
# older version left: it is a leftover only once it is this old.
UNHELD_GRACE_S = 3600.0


@contextlib.contextmanager
def scratch_folder(prefix: str, parent: str | Path | None = None) -> Iterator[Path]:
    """A new folder `<parent>/<prefix><random>`, held by this process until the block ends, then
    removed with its lock file. `parent` defaults to $TMPDIR."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    held = _held_file(path)
    # Locked under another name, then renamed into place: a sweeper never sees the lock file
    # before it is held (until then it sees a folder without one, which is young: kept).
    fresh = held.with_name(held.name + "-new")
    fd = os.open(fresh, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(fresh, held)
        with named_os_errors(path):
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            held.unlink()
        os.close(fd)


_ERRNO_IN_MESSAGE = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


@contextlib.contextmanager
def named_os_errors(folder: Path) -> Iterator[None]:
    """An OSError raised without a file name (Arrow's writers give none; nor does a failed
    `write()`) gets `folder`, the one being written, so its message can say where a write
    failed; the errno is read from Arrow's message when the error carries none."""
    try:
        yield
    except OSError as e:
        if e.filename:
            raise
        number = e.errno
        if number is None and (found := _ERRNO_IN_MESSAGE.search(str(e))):
            number = int(found.group(1))
        if number is None:
            raise OSError(f"{e} (writing {folder})") from e
        raise OSError(number, os.strerror(number), str(folder)) from e


@dataclass(frozen=True)
class Leftover:
    path: Path
    bytes: int


def sweep(parent: str | Path, pattern: str, *, dry_run: bool = False) -> list[Leftover]:
    """Remove the folders `parent/pattern` (a glob) that no live run holds, with their lock files;
    return what was (or, with `dry_run`, would be) removed."""
    found = []
    for folder in sorted(Path(parent).glob(pattern)):
        if not folder.is_dir() or folder.is_symlink():
            continue
        with _unheld(folder) as free:
            if not free:
                continue
            found.append(Leftover(folder, _size(folder)))
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    _held_file(folder).unlink()
    return found


def temp_dir() -> Path:
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def _unheld(folder: Path) -> Iterator[bool]:
    """True (holding its lock for the block) when no live process holds `folder`."""
    held = _held_file(folder)
    try:
        fd = os.open(held, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:
            age = 0.0
        yield age > UNHELD_GRACE_S
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _held_file(folder: Path) -> Path:
    return folder.with_name(folder.name + HELD_SUFFIX)


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total

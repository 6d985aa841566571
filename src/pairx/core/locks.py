"""One writer per output folder: an OS file lock on a file inside the folder.

:func:`hold_folder` takes an exclusive ``fcntl.flock`` on ``FOLDER/.pairx.lock`` and writes the
holder's pid into it. The operating system drops the lock when the process exits, however it
exits (a crash or ``kill -9`` included), so a stale lock file never blocks a rerun: only a live
writer does. A second writer is refused at once with a :class:`~pairx.core.errors.BusyError`
naming the holder's pid.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pairx.core.errors import BusyError, InputError

__all__ = ["LOCK_FILE", "check_not_held", "hold_folder"]

LOCK_FILE = ".pairx.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text if text.isascii() and text.isdigit() else "unknown"


def _busy(root: Path, lock: Path, what: str) -> BusyError:
    return BusyError(
        f"the {what} {root} is being written by another pairx process (pid {_holder(lock)}); "
        "wait for it to finish, stop it, or choose another folder"
    )


def check_not_held(folder: str | Path, what: str = "output folder") -> None:
    """Refuse at once, before any work, a folder another process holds (:func:`hold_folder`).

    Nothing is created; a folder without a lock file, or whose holder has exited, passes.

    Raises
    ------
    BusyError
        Another process holds the folder (the message names its pid).
    """
    root = Path(folder)
    lock = root / LOCK_FILE
    try:
        import fcntl

        fd = os.open(lock, os.O_RDONLY)
    except (ImportError, OSError):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(root, lock, what) from None
    except OSError:
        return
    finally:
        os.close(fd)  # releases the probe's lock


@contextmanager
def hold_folder(folder: str | Path, what: str = "output folder") -> Iterator[Path]:
    """Hold ``folder`` (created when missing) as its only writer while the block runs.

    Parameters
    ----------
    folder
        The folder to hold.
    what
        What the folder is, for the message (``"review project"``).

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    BusyError
        Another process holds the folder (the message names its pid).
    InputError
        The folder cannot be created or the lock file cannot be written.
    """
    root = Path(folder)
    lock = root / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        yield lock
        return
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(f"cannot write in the {what} {root}: {exc.strerror or exc}; choose a "
                         "folder you can write to") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(root, lock, what) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield lock
        finally:
            if created:
                _remove_if_unused(root, lock)
    finally:
        os.close(fd)  # releases the lock


def _remove_if_unused(root: Path, lock: Path) -> None:
    """Remove a folder :func:`hold_folder` created when the holder wrote nothing into it (a
    refused run leaves no trace); called while the lock is still held."""
    try:
        if [p.name for p in root.iterdir()] == [LOCK_FILE]:
            lock.unlink()
            root.rmdir()
    except OSError:
        pass

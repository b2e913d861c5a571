"""Full disks: recognise a write that failed for want of space, and check the space up front where
the size of an output is known.

A failed write is turned into :class:`~transtok.errors.DiskFullError` by the code that owns what
was written (:func:`transtok.artifacts.atomic_output_dir`, :func:`transtok.artifacts.scratch_dir`,
the finetune checkpoints), after it has removed its partial files, so that the message can say
what is left and how much space is free again.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from transtok.errors import DiskFullError, TranstokError

FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
"""OS error numbers of a refused write: no space left on the device, disk quota exceeded."""
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "os error 28)", "os error 122)")
"""How the errors of writers that raise no OSError (safetensors' Rust writer, shutil.Error) say it."""
LOW_SPACE = 1 << 20
"""Below this many free bytes, a write that failed without naming a cause (torch.save's
RuntimeError, an aligner child's exit code) is taken to have failed for want of space."""


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` (absolute) if it exists, else its nearest existing parent: where a new output would go."""
    path = Path(os.path.abspath(path))
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def free_space(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the file system of ``path``, or of its nearest existing parent;
    None when that cannot be read."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None


def size_text(size: int | None) -> str:
    """``size`` bytes in decimal units, as ``df -H`` writes them (e.g. ``1.2 GB``)."""
    if size is None:
        return "an unknown amount"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def tree_size(path: str | os.PathLike) -> int:
    """Bytes in the files under ``path`` (0 when it is gone)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def is_disk_full(exc: BaseException, where: str | os.PathLike | None = None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is a write refused for want of space.

    ``where``: for writers whose errors do not name their cause (torch.save, a child process), also
    when the file system of ``where`` has less than :data:`LOW_SPACE` free.
    """
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, TranstokError):  # a message written on purpose says its own cause
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if any(text in str(current).lower() for text in _FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    # Only a failed write may be guessed from a nearly full disk: an OSError, or a RuntimeError of torch's
    # serializer (inline_container.cc: "file write failed", "unexpected pos"); never an out-of-memory error or
    # a bug that happens while the disk is low.
    text = str(exc).lower()
    written = isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and ("inline_container" in text
                                                                              or "write" in text))
    if where is not None and written:
        free = free_space(where)
        return free is not None and free < LOW_SPACE
    return False


def disk_full_error(path: str | os.PathLike, left: str, *, written: int = 0,
                    fix: str = "free space there or choose another `output`") -> DiskFullError:
    """The error for a write to ``path`` that ran out of space, once the partial files are gone.

    ``left``: what the run leaves (e.g. "nothing new was kept"); ``written``: bytes it had written."""
    free = free_space(path)
    wrote = f" after writing {size_text(written)}" if written else ""
    return DiskFullError(f"ran out of disk space writing {str(path)!r}{wrote} (no space left on device, or over "
                         f"quota; {size_text(free)} free there now); {left}; {fix}", path=path, free=free)


def previous_output(final: str | os.PathLike) -> str:
    """", the previous 'FINAL' is intact" when ``final`` holds an output (--overwrite), else ""."""
    final = Path(final)
    return f", the previous {str(final)!r} is intact" if final.is_dir() and any(final.iterdir()) else ""


def output_left(final: str | os.PathLike) -> str:
    """What a failed write of output ``final`` leaves: nothing new, and the previous output if there is one."""
    return "nothing new was kept" + previous_output(final)


def check_free_space(directory: str | os.PathLike, needed: int, *, what: str, overwrite: bool = False) -> None:
    """Refuse (:class:`DiskFullError`) to start writing ``needed`` bytes into ``directory`` when its
    file system has less free. ``what`` names the output in the message."""
    free = free_space(directory)
    if free is None or needed <= free:
        return
    directory = nearest_existing(directory)
    kept = " (the previous output stays until the new one is complete)" if overwrite else ""
    raise DiskFullError(f"{what} needs about {size_text(needed)} in {str(directory)!r}, which has {size_text(free)} "
                        f"free{kept}; free space there or choose another `output`", path=directory, free=free)

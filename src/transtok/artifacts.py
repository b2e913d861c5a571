"""Output directories: taken at the start of a run, written to a temporary sibling and renamed
into place at the end.

* A second run writing to the same output is refused at once: the first holds an exclusive lock
  (``flock``) on a lock file next to the output, which the kernel releases when its process dies.
* An interrupted or failed run leaves nothing that a later run would mistake for a result; what a
  killed run (SIGKILL, power loss) could not remove is swept by the next run to the same output.

Siblings of ``OUT`` in its parent directory while a run writes it::

    .OUT.lock          the lock; holds the pid of the run writing OUT
    .OUT.partial-*/    the output being written, and scratch space (e.g. the aligner's files)
    .OUT.old-*/        the previous output during --overwrite, removed once the new one is in place
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transtok.diskspace import disk_full_error, is_disk_full, output_left, tree_size
from transtok.errors import ConfigError, CorruptFileError, DataError, DiskFullError

try:
    import fcntl
except ImportError:  # not POSIX: outputs are not locked
    fcntl = None

logger = logging.getLogger(__name__)

PAUSE_ENV = "TRANSTOK_TEST_PAUSE"
"""Test hook: ``STAGE:DIR`` makes a run create ``DIR/STAGE`` (holding its pid) when it reaches
:func:`pause_point` ``STAGE`` and wait there until that file is removed, so that a test can kill
or race a real run at a known point. Stages: ``parse`` (CLI, before parsing), ``claimed`` (the
output is taken), ``aligning`` (the aligner child runs), ``commit`` (the output is complete in its
temporary sibling), ``replaced`` (``--overwrite``: the new output is in place, the old one not yet
removed)."""


def pause_point(stage: str) -> None:
    """Wait here while ``$TRANSTOK_TEST_PAUSE`` names this stage (tests only; a no-op otherwise)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec or spec.partition(":")[0] != stage:
        return
    flag = Path(spec.partition(":")[2]) / stage
    flag.write_text(str(os.getpid()))
    while flag.exists():
        time.sleep(0.02)


@dataclass
class _Claim:
    lock: Path
    fd: int
    pid: int
    made: list[Path] = field(default_factory=list)
    """Parent directories this claim created; removed again if the run leaves them empty."""


_CLAIMS: dict[Path, _Claim] = {}


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


def claim_output(path: str | os.PathLike) -> Path:
    """Take ``path`` for this process until :func:`release_output` (or process exit).

    Refuses (:class:`ConfigError`) when another live run holds it; sweeps the siblings a killed run
    left behind. Taking an output this process already holds is a no-op. Under ``torchrun`` /
    ``accelerate launch`` only rank 0 takes it (the other ranks write nothing there).
    """
    final = _absolute(path)
    if final in _CLAIMS or fcntl is None or os.environ.get("RANK", "0") != "0":
        return final
    made = [p for p in reversed(final.parents) if not p.exists()]
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.parent / f".{final.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                _remove_empty(made)
                who = f"pid {owner[0] if owner else '?'}"
                if len(owner) > 1 and owner[1] != socket.gethostname():
                    who += f" on {owner[1]}"
                raise ConfigError(f"another run ({who}) is writing {str(path)!r}; wait for it to finish or choose "
                                  "another --output") from None
            logger.warning("cannot lock %s (%s); two runs writing %s at once would not be noticed", lock, exc, final)
            return final
        try:  # the holder may have removed the file between our open and flock: lock the file that is there
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    stale = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    _CLAIMS[final] = _Claim(lock, fd, os.getpid(), made)
    _sweep(final, stale[0] if stale else None)
    pause_point("claimed")
    return final


def _sweep(final: Path, stale_pid: str | None) -> None:
    """Remove what a killed run left next to ``final`` (we hold the lock, so no live run owns it).

    A killed ``--overwrite`` that had moved the old output aside but not yet put the new one in
    place gets the old output back."""
    old, partial = f".{final.name}.old-", f".{final.name}.partial-"  # not glob patterns: names may hold [ or *
    siblings = sorted((p for p in final.parent.iterdir() if p.name.startswith((old, partial))),
                      key=lambda p: (not p.name.startswith(old), p.name))  # an old output first: it may go back
    for sibling in siblings:
        if sibling.name.startswith(old) and (sibling / "old").is_dir() and not final.exists():
            (sibling / "old").rename(final)
            logger.warning("restored %s, which an interrupted --overwrite had moved aside", final)
        shutil.rmtree(sibling, ignore_errors=True)
    if siblings:
        logger.warning("removed %s, left next to %s by an interrupted run%s", ", ".join(s.name for s in siblings),
                       final.name, f" (pid {stale_pid})" if stale_pid else "")


def release_output(path: str | os.PathLike) -> None:
    """Give ``path`` back: remove the lock file and the parent directories the claim created, if empty."""
    claim = _CLAIMS.get(_absolute(path))
    if claim is None or claim.pid != os.getpid():  # a forked child does not own its parent's claims
        return
    del _CLAIMS[_absolute(path)]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(claim.lock)  # while still locked, so that a waiting run retries on a fresh file
    os.close(claim.fd)
    _remove_empty(claim.made)


def release_all() -> None:
    """Give back every output this process holds (at exit, and after each CLI run)."""
    for final in list(_CLAIMS):
        release_output(final)


atexit.register(release_all)


def _remove_empty(directories: list[Path]) -> None:
    for directory in reversed(directories):
        with contextlib.suppress(OSError):
            directory.rmdir()


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Take ``path`` for this run (:func:`claim_output`) and return it as a Path; refuse an existing
    non-empty directory unless ``overwrite``.

    Call it at the start of a run, so that a bad or busy output fails before the work, not after.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path {str(path)!r} exists and is a file; give a directory path")
    held = _absolute(path) in _CLAIMS
    claim_output(path)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        if not held:
            release_output(path)
        raise ConfigError(
            f"output directory {str(path)!r} exists and is not empty; choose another path or pass --overwrite"
        )
    return path


@contextlib.contextmanager
def scratch_dir(output: str | os.PathLike) -> Iterator[Path]:
    """A private directory for large temporary files of the run writing ``output``: a sibling of it
    (same file system, swept with it after a kill), removed when the block ends."""
    final = _absolute(output)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", suffix="-scratch", dir=final.parent))
    try:
        yield tmp
    except Exception as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc):
            raise
        written = tree_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_full_error(final, f"its scratch files are removed and {output_left(final)}",
                              written=written) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends (renames that must not be cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for number in received[:1]:
            handler = previous[number]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` only if the block succeeds.

    On any exception (Ctrl-C and SIGTERM under the CLI included) the temporary directory is removed
    and ``path`` is left as it was. The output is taken first (:func:`check_output_dir`) and given
    back at the end.
    """
    final = check_output_dir(path, overwrite=overwrite)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        # mkdtemp makes the directory private (0700); the output gets the permissions of a plain mkdir.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        try:
            yield tmp
            pause_point("commit")
        except BaseException as exc:
            full = is_disk_full(exc) and not isinstance(exc, DiskFullError)
            written = tree_size(tmp) if full else 0
            shutil.rmtree(tmp, ignore_errors=True)
            if full:
                raise disk_full_error(final, output_left(final), written=written) from exc
            raise
        with _signals_deferred():
            if final.exists():
                # Move the old one aside first so that a crash between the two renames loses nothing
                # (the next run to this output puts it back).
                trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                final.rename(trash / "old")
                tmp.rename(final)
            else:
                trash = None
                tmp.rename(final)
        if trash is not None:
            pause_point("replaced")
            with _signals_deferred():
                shutil.rmtree(trash, ignore_errors=True)
        logger.info("wrote %s", final)
    finally:
        release_output(final)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON (stable bytes for the same data)."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: str | os.PathLike, *, limit: int | None = None) -> str:
    """Hex sha256 of a file (of its first ``limit`` bytes when given)."""
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20 if remaining is None else min(1 << 20, remaining)):
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return digest.hexdigest()


def read_sparse(directory: str | os.PathLike, meta_file: str, tensors_file: str, *, what: str, verb: str, fix: str):
    """Read ``meta_file`` (JSON with the matrix ``shape``) and ``tensors_file`` (safetensors: a CSR
    matrix as ``data``, ``indices``, ``indptr``, plus any other arrays) from ``directory``.

    Returns ``(meta, arrays, matrix)``; a missing pair is a :class:`DataError` naming ``verb``, a
    truncated or inconsistent one a :class:`CorruptFileError` with ``fix``.
    """
    import scipy.sparse as sp
    from safetensors.numpy import load_file

    directory = Path(directory)
    meta_path, tensors_path = directory / meta_file, directory / tensors_file
    if not meta_path.is_file() or not tensors_path.is_file():
        raise DataError(f"{str(directory)!r} holds no {what} ({meta_path.name} + {tensors_path.name}); "
                        f"create one with 'transtok {verb}'")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        shape = tuple(meta["shape"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(meta_path, fix, repr(exc)) from exc
    try:
        arrays = load_file(str(tensors_path))
        matrix = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
    except Exception as exc:  # safetensors' own error type, or arrays that do not fit the shape
        raise CorruptFileError(tensors_path, fix, exc) from exc
    return meta, arrays, matrix

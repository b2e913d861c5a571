"""Output directories: taken at the start of a run, written to a temporary sibling and renamed
into place at the end.

* A second run writing to the same output is refused at once: the first holds an exclusive lock
  (``flock``) on a lock file next to the output, which the kernel releases when its process dies.
* An interrupted or failed run leaves nothing that a later run would mistake for a result; what a
  killed run (SIGKILL, power loss) could not remove is swept by the next run to the same output.

* A run never replaces or deletes what it did not write: an output that is, contains or lies
  inside one of the run's inputs is refused, and ``--overwrite`` replaces only a directory that
  holds the marker file every output gets (``.transtok-output``).
* A finished output that cannot be renamed into place is kept, marked finished, and named.

Siblings of ``OUT`` in its parent directory while a run writes it::

    .OUT.lock          the lock; holds the pid of the run writing OUT
    .OUT.partial-*/    the output being written, and scratch space (e.g. the aligner's files); one
                       holding ``.transtok-finished`` is a finished output whose final rename failed
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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transtok.diskspace import disk_full_error, is_disk_full, output_left, tree_size
from transtok.errors import ConfigError, CorruptFileError, DataError, DiskFullError, OutputError
from transtok.options import option

try:
    import fcntl
except ImportError:  # not POSIX: outputs are not locked
    fcntl = None

logger = logging.getLogger(__name__)

MARKER = ".transtok-output"
"""Written into every output directory: ``--overwrite`` replaces only a directory that holds it."""
MARKER_TEXT = "written by transtok\n"
FINISHED = ".transtok-finished"
"""Written into a finished output whose final rename failed, so that no later run sweeps it away."""
SIBLING_CHARS = 26
"""Characters the longest sibling name adds to the output's (``.OUT.partial-XXXXXXXX-scratch``)."""

PROVENANCE_DIR = "transtok"
"""The folder of a written model directory that holds how it was made (config, mapping, reports)."""
SOURCE_TOKENIZER_DIR = "source_tokenizer"
TARGET_TOKENIZER_DIR = "target_tokenizer"
"""The copies of both tokenizers in an alignment or mapping directory ('transtok align' / 'map')."""

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
    lock = final.parent / f".{final.name}.lock"
    while True:
        try:  # creating the lock file is also the test that the output's location is writable
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            _remove_empty(made)
            raise _location_error(exc, path) from None
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
                                  "another `output`") from None
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
    for sibling in list(siblings):
        if (sibling / FINISHED).is_file():  # a complete result the user was told to move: never ours to remove
            logger.warning("left %s next to %s: it is a finished output that could not be moved into place; move "
                           "it there yourself or remove it", sibling, final.name)
            siblings.remove(sibling)
            continue
        if sibling.name.startswith(old) and (sibling / "old").is_dir() and not final.exists():
            (sibling / "old").rename(final)
            logger.warning("restored %s, which an interrupted `overwrite` had moved aside", final)
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


_LOCATION_FIXES = {
    errno.EACCES: "choose an output in a directory you can write to",
    errno.EPERM: "choose an output in a directory you can write to",
    errno.EROFS: "choose an output on a writable file system",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another `output`",
    errno.ENAMETOOLONG: "choose a shorter `output`",
    errno.EBUSY: "it is in use or a mount point: choose a new directory, e.g. inside it",
    errno.EXDEV: "choose an output whose parent directory is on one file system",
}


def _location_error(exc: OSError, path: str | os.PathLike) -> OSError | ConfigError:
    """``exc`` (from creating, locking or renaming the output) as one line naming the path and the
    fix, when it says the location cannot hold an output; other errors (a full disk ...) stay as they are."""
    fix = _LOCATION_FIXES.get(exc.errno)
    if fix is None:
        return exc
    where = f" at {exc.filename!r}" if exc.filename and os.fspath(exc.filename) != os.fspath(path) else ""
    return ConfigError(f"cannot write the output {os.fspath(path)!r}: {exc.strerror}{where}; {fix}")


def path_relation(path: str | os.PathLike, other: str | os.PathLike) -> str | None:
    """How the real paths of ``path`` and ``other`` overlap: 'is', 'contains', 'lies inside', or None."""
    real, real_other = Path(os.path.realpath(path)), Path(os.path.realpath(other))
    if real == real_other:
        return "is"
    if real in real_other.parents:
        return "contains"
    if real_other in real.parents:
        return "lies inside"
    return None


def _check_location(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> Path:
    """Refuse an output that cannot be replaced as a whole, or whose replacement would destroy more
    than the old output: the run's own inputs, the working directory, home, a mount point, a symlink.
    Touches nothing."""
    given = os.fspath(path)
    if not given:
        raise ConfigError("the output path is empty; give a directory path, e.g. `output` out")
    path, shown = Path(given), repr(given)
    real = Path(os.path.realpath(path))
    existing = next(p for p in (real, *real.parents) if os.path.lexists(p))
    if existing == real and not real.is_dir():
        raise ConfigError(f"output path {shown} exists and is a file; give a directory path")
    if not existing.is_dir():
        raise ConfigError(f"output {shown} cannot be created: {str(existing)!r} is a file, not a directory; "
                          "choose another `output`")
    name_max = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in real.relative_to(existing).parts:
        size, own = len(os.fsencode(part)), part == real.name
        if size > name_max - (SIBLING_CHARS if own else 0):
            # the output's own name leaves room for its siblings' (.OUT.partial-XXXXXXXX-scratch)
            allowed = (f"the {name_max - SIBLING_CHARS} an output's name may have here (the file system's {name_max}, "
                       f"less {SIBLING_CHARS} for the temporary names next to it)" if own else
                       f"the {name_max} this file system allows")
            raise ConfigError(f"output {shown}: the name {part[:20] + '...'!r} has {size} bytes, more than {allowed}; "
                              "choose a shorter `output`")
    if os.path.islink(path):  # replacing a link would replace the link, not the directory the user means
        raise ConfigError(f"output {shown} is a symbolic link to {os.readlink(path)!r}; give the directory itself")
    try:
        here = Path(os.path.realpath(os.getcwd()))
    except OSError:  # the working directory was removed: nothing of it to protect
        here = None
    if here is not None and (real == here or real in here.parents):
        raise ConfigError(f"output {shown} is the current directory{'' if real == here else ' or one of its parents'}"
                          ", which a run cannot replace; give a new directory, e.g. `output` out")
    if real == Path(os.path.realpath(os.path.expanduser("~"))):
        raise ConfigError(f"output {shown} is your home directory, which a run cannot replace; give a new directory "
                          "inside it, e.g. `output` ~/out")
    if os.path.ismount(real):
        raise ConfigError(f"output {shown} is a mount point, which a run cannot replace; give a new directory "
                          "inside it")
    for source in inputs:
        if source is None or not os.path.lexists(source):  # a hub id: nothing on disk to destroy
            continue
        relation = path_relation(path, source)
        if relation is not None:
            raise ConfigError(f"output {shown} {relation} the input {os.fspath(source)!r}; choose an output outside "
                              "the run's inputs")
    return path


@dataclass
class OutputDir:
    """The output directory of a verb that writes one (:func:`check_output_dir`, :func:`atomic_output_dir`)."""

    output: str = option(group="output", metavar="DIR", help="output directory (must not exist or be empty)")
    overwrite: bool = option(False, group="output", help="replace an output directory that transtok wrote")


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike | None] = (), replace_unmarked: bool = False) -> Path:
    """Take ``path`` for this run (:func:`claim_output`) and return it as a Path; refuse an existing
    non-empty directory unless ``overwrite``, and with ``overwrite`` one that transtok did not write
    (no :data:`MARKER`) unless ``replace_unmarked`` (the library's own caches).

    ``inputs`` are the run's input paths (hub ids and None are skipped): an output that is, contains
    or lies inside one is refused. Call it at the start of a run, so that a bad or busy output fails
    before the work, not after; a refusal leaves nothing behind.
    """
    inputs = list(inputs)
    path = _check_location(path, inputs)
    held = _absolute(path) in _CLAIMS
    claim_output(path)
    if path.is_dir() and any(path.iterdir()):
        problem = None
        if not overwrite:
            problem = f"output directory {str(path)!r} exists and is not empty; choose another path or pass `overwrite=True`"
        elif not replace_unmarked and not (path / MARKER).is_file():
            problem = (f"{str(path)!r} was not written by transtok (no {MARKER} file), so `overwrite` will not "
                       "replace it; remove it yourself or choose another `output`")
        if problem is not None:
            if not held:
                release_output(path)
            raise ConfigError(problem)
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
def atomic_output_dir(path: str | os.PathLike, *, overwrite: bool = False,
                      inputs: Iterable[str | os.PathLike | None] = (),
                      replace_unmarked: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` only if the block succeeds.

    On any exception (Ctrl-C and SIGTERM under the CLI included) the temporary directory is removed
    and ``path`` is left as it was. The output is taken first (:func:`check_output_dir`, with the
    same ``overwrite``, ``inputs`` and ``replace_unmarked``) and given back at the end. The finished
    output gets :data:`MARKER`; if it cannot be renamed into place it is kept where it is, marked
    :data:`FINISHED`, and an :class:`OutputError` says where.
    """
    final = check_output_dir(path, overwrite=overwrite, inputs=inputs, replace_unmarked=replace_unmarked)
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        except OSError as exc:
            raise _location_error(exc, path) from None
        # mkdtemp makes the directory private (0700); the output gets the permissions of a plain mkdir.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        try:
            yield tmp
            (tmp / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
            pause_point("commit")
        except BaseException as exc:
            full = is_disk_full(exc) and not isinstance(exc, DiskFullError)
            written = tree_size(tmp) if full else 0
            shutil.rmtree(tmp, ignore_errors=True)
            if full:
                raise disk_full_error(final, output_left(final), written=written) from exc
            raise
        with _signals_deferred():
            trash = _put_in_place(tmp, final)
        if trash is not None:
            pause_point("replaced")
            with _signals_deferred():
                shutil.rmtree(trash, ignore_errors=True)
        logger.info("wrote %s", final)
    finally:
        release_output(final)


def _put_in_place(tmp: Path, final: Path) -> Path | None:
    """Rename the finished ``tmp`` to ``final``, moving an old ``final`` aside first; return the
    directory that holds the old one (to remove), if any. When a rename fails, the old output is
    back in place and ``tmp`` is kept and marked finished."""
    trash = None
    try:
        if final.exists():
            # Move the old one aside first so that a crash between the two renames loses nothing
            # (the next run to this output puts it back).
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            final.rename(trash / "old")
        tmp.rename(final)
        return trash
    except OSError as exc:
        if trash is not None:
            if (trash / "old").exists() and not final.exists():
                with contextlib.suppress(OSError):
                    (trash / "old").rename(final)
            if not (trash / "old").exists():
                shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):  # without it the next run's sweep would take it for a killed run's
            (tmp / FINISHED).write_text(f"finished output for {final}\n", encoding="utf-8")
        raise OutputError(f"the finished output could not be moved to {str(final)!r} ({exc.strerror or exc}); it is "
                          f"complete in {str(tmp)!r}: move it there yourself") from exc


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON (stable bytes for the same data). NaN and infinity
    raise ValueError: they are not JSON, and most readers refuse a file that holds them."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


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


def check_output_file(path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (),
                      option: str = "`output`") -> Path:
    """Take the output *file* ``path`` for this run (:func:`claim_output`) once it is known to be
    writable: not a directory, in an existing writable folder, not one of ``inputs``. Returns the
    file to write (a link's target). Call it before the work, so that a bad path fails at once."""
    given = str(path)
    final = Path(os.path.realpath(path))
    if final.is_dir():
        raise ConfigError(f"{option} {given!r} is a directory; give a file path, e.g. "
                          f"{os.path.join(given, 'output.txt')!r}")
    folder = final.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"the folder of {option} {given!r}, {str(folder)!r}, {what}; create the folder "
                          f"(mkdir -p) or choose another {option}")
    for other in inputs:
        if os.path.realpath(other) == str(final) or (final.exists() and os.path.exists(other)
                                                     and os.path.samefile(other, final)):
            raise ConfigError(f"{option} {given!r} is the input file {str(other)!r}; writing it would replace the "
                              f"text being read: choose another {option}")
    if final.exists() and not os.access(final, os.W_OK):
        raise ConfigError(f"{option} {given!r} exists and is read-only; make it writable or choose another {option}")
    if final.exists() and not final.is_file():  # /dev/null, a FIFO: written in place, never replaced
        return final
    try:  # the one sure test of writing there: what write_text_atomic will do
        os.rmdir(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=folder))
    except OSError as exc:
        raise ConfigError(f"cannot write {option} {given!r} in {str(folder)!r} ({exc.strerror}); choose a writable "
                          "folder") from None
    claim_output(final)
    return final


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to the file ``path`` (a link's target) through a temporary sibling that
    replaces it only once complete, so an interrupted run leaves the old file or none, never half
    a file. The file keeps an existing file's permissions; a device or FIFO (``/dev/null``) is
    written in place. Gives the path back (:func:`release_output`)."""
    final = Path(os.path.realpath(path))
    if final not in _CLAIMS:
        check_output_file(final)
    if final.exists() and not final.is_file():  # /dev/null, a FIFO: nothing to replace
        with open(final, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        return final
    try:
        # A folder, not a bare file: a killed run's leftover is swept like any partial output.
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        try:
            tmp = scratch / final.name
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(final.stat().st_mode & 0o7777 if final.exists() else 0o666 & ~umask)
            pause_point("commit")
            with _signals_deferred():
                os.replace(tmp, final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        release_output(final)
    return final

"""Output directories: written to a temporary sibling and renamed into place, so an
interrupted run leaves nothing that a later run would mistake for a result."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transtok.errors import ConfigError

logger = logging.getLogger(__name__)


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path; refuse an existing non-empty directory unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path {str(path)!r} exists and is a file; give a directory path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"output directory {str(path)!r} exists and is not empty; choose another path or pass --overwrite"
        )
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` only if the block succeeds.

    On any exception the temporary directory is removed and ``path`` is left as it was.
    """
    final = check_output_dir(path, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    # mkdtemp makes the directory private (0700); the output gets the permissions of a plain mkdir.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        # Move the old one aside first so that a crash between the two renames loses nothing.
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        final.rename(trash / "old")
        tmp.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(final)
    logger.info("wrote %s", final)


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

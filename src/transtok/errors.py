"""Typed errors. Every message names the bad value, what was expected and the fix.

The CLI turns any :class:`TranstokError` into a one-line message and exit code 2.
"""
from __future__ import annotations


class TranstokError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(TranstokError, ValueError):
    """An option or argument has a value we cannot use."""


class DataError(TranstokError, ValueError):
    """An input file or corpus is malformed or empty."""


class ArchitectureError(TranstokError):
    """A model lacks what an operation needs (e.g. output embeddings)."""


class OutputError(TranstokError):
    """A finished output could not be put in place (it is kept; the message says where)."""


class MismatchError(TranstokError):
    """Two artifacts that must belong together do not (e.g. a mapping and a tokenizer)."""


class CorruptFileError(DataError):
    """A file is truncated or not what its name says (an interrupted download, copy or write)."""

    def __init__(self, path, fix: str, detail: str = "") -> None:
        detail = " ".join(str(detail).split())[:200]
        super().__init__(f"{path} is truncated or corrupt{f' ({detail})' if detail else ''}; {fix}")
        self.path = path


class DiskFullError(TranstokError):
    """A write failed, or would fail, for want of space on its file system (ENOSPC, EDQUOT).

    ``path``: what was being written; ``free``: bytes free there (None when unknown)."""

    def __init__(self, message: str, path=None, free: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.free = free


class MissingDependencyError(TranstokError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{package}', which is not installed: "
            f"pip install 'transtok[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, *, package: str, extra: str, purpose: str):
    """Import and return ``module``, or raise :class:`MissingDependencyError` with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package, extra, purpose) from exc

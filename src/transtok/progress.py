"""Progress the user can read: progress bars that reach log files, and durations and timing tables
rounded for log lines.

Long steps log a line when they start (with the size of the work) and one when they end. In between,
:func:`bar` draws a ``tqdm`` bar in a terminal; when standard error is not a terminal (a log file, a
pipe, a batch job) the same bar logs one line every :data:`LOG_EVERY` seconds instead (done / total,
rate, time left), through the ``transtok.progress`` logger, and nothing for steps shorter than that.
``TQDM_DISABLE`` (set by ``-q``) turns both off.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

LOG_EVERY = 30.0
"""Seconds between two progress lines in a log file (``$TRANSTOK_LOG_EVERY`` overrides it)."""


class _LogLines:
    """A file for tqdm that logs each refresh as one line (tqdm writes ``\\r`` + the bar); the same
    line twice (the last update, then the close) is logged once."""

    def __init__(self) -> None:
        self.last = ""

    def write(self, text: str) -> None:
        text = " ".join(text.split())
        done = text.split(",")[0]  # "desc: n/total unit (p %)": the close repeats it with another rate
        if text and done != self.last:
            self.last = done
            logger.info("%s", text)

    def flush(self) -> None:
        pass


_LOG_LINE = "{desc}: {n_fmt}/{total_fmt} UNIT ({percentage:.0f} %), {rate_fmt}, {remaining} left"
_LOG_LINE_OPEN = "{desc}: {n_fmt} UNIT, {rate_fmt}, {elapsed} so far"


def _disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")


def _terminal() -> bool:
    stream = sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(iterable: Iterable | None = None, **kwargs: Any):
    """A progress bar over ``iterable`` (or ``total=``): tqdm's in a terminal, periodic log lines
    elsewhere; takes tqdm's keyword arguments (``desc``, ``total``, ``unit``, ``initial``, ...)."""
    from tqdm.auto import tqdm

    if _disabled():
        return tqdm(iterable, disable=True, **kwargs)
    if _terminal():
        return tqdm(iterable, disable=False, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    known = kwargs.get("total") is not None or hasattr(iterable, "__len__")
    line = (_LOG_LINE if known else _LOG_LINE_OPEN).replace("UNIT", kwargs.get("unit", "it"))
    every = _log_every()
    # delay: a step shorter than that logs nothing; mininterval: then one line per period
    return tqdm(iterable, file=_LogLines(), mininterval=every, delay=every, bar_format=line, **kwargs)


def _log_every() -> float:
    try:
        every = float(os.environ.get("TRANSTOK_LOG_EVERY", LOG_EVERY))
    except ValueError:
        every = LOG_EVERY
    return every if every >= 0 else LOG_EVERY


def duration(seconds: float) -> str:
    """A duration to two significant figures at most: '0.94 s', '38 s', '2 min 5 s', '1 h 3 min'."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds}")
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def timings(seconds: Mapping[str, float]) -> str:
    """'load 0.9 s, tokenizer 20 s, align 38 s' from {'load': 0.937..., ...}, in the given order."""
    return ", ".join(f"{name} {duration(value)}" for name, value in seconds.items())

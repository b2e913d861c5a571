"""Progress the user can read: durations and timing tables rounded for log lines.

Long steps log a line when they start (with the size of the work) and one when they end; bars come
from ``tqdm.auto`` with ``disable=None`` (shown in a terminal only).
"""
from __future__ import annotations

from collections.abc import Mapping


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

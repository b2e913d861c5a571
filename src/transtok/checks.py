"""Argument checks shared by the config dataclasses and the verbs: numbers and devices.

Comparisons are written so that NaN fails them (``not x > 0``), and infinity is refused before any
range test, so a NaN or infinite option is one :class:`~transtok.errors.ConfigError`, never a silent
change of the result.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transtok.errors import ConfigError
from transtok.options import option

DEVICE_TYPES = ("cpu", "cuda", "mps")
SEED_MAX = 2**31 - 1
"""Largest seed every consumer takes (numpy: 32-bit unsigned, fastText: a C int)."""


def _shown(value: Any) -> str:
    """``value`` as a user typed it: nan, inf, 3 (numpy scalars without their type), 'text' quoted."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return str(value.item() if hasattr(value, "item") else value)
    return repr(value)


def _bound(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False, hint: str = "") -> Any:
    """``value`` unchanged when it is a finite number (a whole one with ``integer``) within the bounds;
    else a :class:`ConfigError` "NAME must be a finite number > 0 (HINT), got nan". ``low``/``high`` are
    inclusive unless ``low_open``/``high_open``; ``hint`` says what the values mean (e.g. "0 = off")."""
    if integer:
        kind = "an integer"
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        kind = "a finite number"
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return value
    if low is not None and high is not None:
        span = f" in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    elif low is not None:
        span = f" {'>' if low_open else '>='} {_bound(low)}"
    elif high is not None:
        span = f" {'<' if high_open else '<='} {_bound(high)}"
    else:
        span = ""
    raise ConfigError(f"{name} must be {kind}{span}{f' ({hint})' if hint else ''}, got {_shown(value)}")


def check_device(device: Any, *, flag: str = "`device`"):
    """``device`` as a ``torch.device``, or None for 'auto'/None (the caller picks); a
    :class:`ConfigError` for a name torch does not parse, a type other than cpu/cuda/mps, or an
    accelerator this machine does not have."""
    import torch

    if device is None or device == "auto":
        return None
    expected = "use auto, cpu, cuda, cuda:N (N = 0 for the first GPU) or mps"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{flag} {_shown(device)} is not a device; {expected}") from None
    if parsed.type not in DEVICE_TYPES:
        raise ConfigError(f"{flag} {device}: transtok runs on {', '.join(DEVICE_TYPES)} only; {expected}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "built without CUDA" if torch.version.cuda is None else "no GPU visible"
            raise ConfigError(f"{flag} {device}: CUDA is not available on this machine (torch {torch.__version__}, "
                              f"{why}); use {flag} cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"{flag} {device}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                              f"(cuda:0..cuda:{count - 1}); use one of those, or {flag} cuda")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} {device}: Apple's MPS is not available on this machine (torch {torch.__version__}); "
                          f"use {flag} cpu")
    return parsed


PRECISIONS = ("auto", "bf16", "fp32")
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""Dtypes a model is loaded in; auto: the checkpoint's own."""


@dataclass
class Placement:
    """Where and how a verb runs its model: one declaration of each setting, for every verb that has it."""

    device: str = option("auto", group="device", help="where the model runs: auto, cpu, cuda, cuda:N or mps "
                                                      "(default: auto = cuda when available, else cpu)")
    precision: str = option("auto", group="device", choices=PRECISIONS, metavar="P",
                            help="%(choices)s: bf16 autocast or fp32 (default: auto = bf16 where the device computes "
                                 "it natively)")
    dtype: str = option("auto", group="device", choices=DTYPES, metavar="DTYPE",
                        help="load (and save) dtype: %(choices)s (default: auto = the checkpoint's own)")


def pick_device(device: Any = None, *, flag: str = "`device`"):
    """The ``torch.device`` a verb runs its model on: ``device`` checked by :func:`check_device`, and for
    None / 'auto' CUDA when available, else the CPU (the one rule of every verb and test)."""
    import torch

    checked = check_device(device, flag=flag)
    if checked is not None:
        return checked
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device) -> bool:
    """Whether bf16 autocast is fast on ``device``: native bf16 on CUDA, AVX512-BF16/AMX on CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability().upper()
        if "AMX" in capability or "BF16" in capability:
            return True
        # get_cpu_capability reports the ISA torch dispatches to (e.g. "AVX512"), not the bf16 extension.
        try:
            flags = Path("/proc/cpuinfo").read_text(errors="ignore")
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def pick_bf16(precision: str | bool | None, device) -> bool:
    """Whether to autocast to bfloat16 on ``device``: 'bf16' / True yes, 'fp32' / False no, 'auto' / None
    where the device computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX)."""
    if isinstance(precision, bool):
        return precision
    if precision not in (None, *PRECISIONS):
        raise ConfigError(f"`precision` {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision in (None, "auto"):
        return bf16_supported(device)
    return precision == "bf16"

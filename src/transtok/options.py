"""Option declarations: each setting is declared once, as a dataclass field of the config it belongs to,
with its help, choices and command-line group. The CLI builds its flags from these declarations
(:mod:`transtok.cli`); the library reads the same fields. Standard library only: the CLI imports this at
parse time.

    @dataclass
    class Cleaning:
        max_pairs: int | None = option(None, help="use at most this many pairs (after cleaning)", group="input")
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any

GROUPS = ("input", "output", "method", "device", "advanced")
"""Help sections of a verb, in the order ``--help`` lists them."""


@dataclass(frozen=True)
class Option:
    """How a config field appears on the command line."""

    help: str
    """Help text; ``%(default)s`` is replaced by the default."""
    group: str = "method"
    """One of :data:`GROUPS`."""
    flag: str | None = None
    """The flag; None: ``--`` + the field name with ``-`` for ``_``."""
    choices: tuple | None = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()
    """Older flags for the same setting: hidden, accepted with a deprecation warning for one release."""
    negate: str | None = None
    """For a boolean that defaults to True: the flag that turns it off (e.g. ``--no-dedupe``)."""
    cli: bool = True
    """False: a library-only setting (benchmarks' knobs), not on the command line."""

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"option group {self.group!r} is not one of {', '.join(GROUPS)}")


def option(default: Any = MISSING, *, default_factory: Any = MISSING, help: str, **how: Any) -> Any:
    """A dataclass field with its command-line declaration (:class:`Option`) in its metadata."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"option": Option(help=help, **how)})


def declared(field: dataclasses.Field) -> Option | None:
    """The :class:`Option` of a field, None for a field declared without :func:`option`."""
    return field.metadata.get("option")


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a field."""
    how = declared(field)
    return (how.flag if how and how.flag else "--" + field.name.replace("_", "-"))


_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def as_flags(message: str, flags: Mapping[str, str]) -> str:
    """A library message in a verb's terms: the library names a setting by its parameter name in backticks
    (```min_count` -1 is below 0``); each declared one becomes its flag (``--min-count -1 is below 0``).
    Backticked names the verb does not declare stay as they are."""
    return _PARAMETER.sub(lambda m: flags.get(m.group(1), m.group(0)), message)

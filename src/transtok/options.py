"""Option declarations: each setting is declared once, as a dataclass field of the config it belongs to,
with its help, choices and command-line group. The CLI builds its flags from these declarations
(:func:`add_options`); the library reads the same fields. Standard library only: the CLI imports this at
parse time.

    @dataclass
    class Cleaning:
        max_pairs: int | None = option(None, help="use at most this many pairs (after cleaning)", group="input")

A verb lists the declaration classes it takes (:class:`Use`); the flags, their types (from the annotations),
defaults, choices and help groups follow. Library messages name a setting by its parameter name in
backticks (```min_count` -1 is below 0``); :func:`as_flags` turns them into the running verb's flags.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
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
    """One of :data:`GROUPS`. ``advanced`` options are named, not described, by ``--help`` (``--help-all``)."""
    flag: str | None = None
    """The flag; None: ``--`` + the field name with ``-`` for ``_``."""
    choices: tuple | None = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()
    """Older flags for the same setting: hidden, accepted with a deprecation warning for one release."""
    negate: str | None = None
    """For a boolean: the flag that turns it off (e.g. ``--no-dedupe``). A boolean that defaults to True has
    only this flag unless ``flag`` names the positive one too; one that defaults to None has both."""
    cli: bool = True
    """False: a library-only setting (benchmarks' knobs), not on the command line."""
    nargs: str | None = None
    """argparse's nargs where the annotation's (``+`` for a list) is not meant, e.g. ``*``."""
    repeat: bool = False
    """A list given by repeating the flag (``--vocab en=a --vocab es=b``), not by several values."""
    const: Any = None
    """A flag without a value that stores this (e.g. ``--all-rows`` stores ``rows='all'``)."""
    parse: Callable[[str], Any] | None = None
    """Converter of the command-line text where the annotation's type is not enough (e.g. ``2M`` tokens)."""
    off: float | None = None
    """The command-line value that stands for None ("0 disables"), where None means off in Python."""
    exclusive: str | None = None
    """Options of a verb with the same name here are mutually exclusive."""

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


_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*(?:=[A-Za-z0-9_]+)?)`")


def as_flags(message: str, flags: Mapping[str, str]) -> str:
    """A library message in a verb's terms: the library names a setting by its parameter name in backticks
    (```min_count` -1 is below 0``); each declared one becomes its flag (``--min-count -1 is below 0``), and
    a boolean's value the flag that sets it (```merge=False``` → ``--no-merge``). A dotted name
    (```focus.min_count```, a field of a nested config) falls back to its last part when the verb does not
    declare it. Backticked names the verb does not declare stay as they are."""
    def flag(match: re.Match) -> str:
        name = match.group(1)
        return flags.get(name) or flags.get(name.rpartition(".")[2]) or match.group(0)

    return _PARAMETER.sub(flag, message)


def as_flags_everywhere(message: str, flags: Mapping[str, str]) -> str:
    """:func:`as_flags`, and a setting the running verb does not declare (another verb's, e.g. ``map``'s
    ```tied_head``` in ``transplant``'s message) in the command line's spelling: ``--tied-head``
    (```chat=False``` → ``--no-chat``, ```chat=True``` → ``--chat``); no backtick reaches a CLI user."""
    def spelled(match: re.Match) -> str:
        name, _, value = match.group(1).rpartition(".")[2].partition("=")
        flag = "--" + name.replace("_", "-")
        return {"False": "--no-" + flag[2:], "True": flag}.get(value, flag if not value else f"{flag} {value}")

    return _PARAMETER.sub(spelled, as_flags(message, flags))


# --- the command line generated from the declarations ---------------------------------------------

@dataclass(frozen=True)
class Use:
    """A verb's use of a declaration class: which fields, and what the verb changes about them."""

    cls: type
    only: tuple[str, ...] | None = None
    """These fields only (None: every declared one)."""
    prefix: str = ""
    """How the library's messages qualify the fields (``focus.`` for :class:`~transtok.focus.FocusConfig`)."""
    required: tuple[str, ...] = ()
    """Fields this verb needs (in an exclusive set: one of the set)."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """This verb's own defaults (e.g. translate's generation guards, chosen on dev)."""


def use(cls: type, *only: str, prefix: str = "", required: Iterable[str] = (), **defaults: Any) -> Use:
    """``Use(cls, ...)`` written as a call: ``use(HeadCalibration)``, ``use(Placement, "device")``."""
    return Use(cls, only or None, prefix, tuple(required), tuple(defaults.items()))


_SCALARS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
_LIST = re.compile(r"(?:list|Sequence|tuple)\[(\w+)(?:, \.\.\.)?\]")


def _annotation(field: dataclasses.Field) -> tuple[type, bool]:
    """(scalar type, whether a list) of a field's annotation: int, float, str, bool, ``X | None``, ``list[X]``."""
    text = field.type if isinstance(field.type, str) else re.sub(r"\btyping\.|<class '(\w+)'>", r"\1", str(field.type))
    parts = [p.strip() for p in text.split("|") if p.strip() != "None"]
    if len(parts) == 1:
        listed = _LIST.fullmatch(parts[0])
        name = listed.group(1) if listed else parts[0]
        if name in _SCALARS:
            return _SCALARS[name], bool(listed)
    raise TypeError(f"{field.name}: cannot declare {text!r} on the command line; give Option(parse=...)")


class _Deprecating:
    """Mixin of an argparse action whose older flags are accepted with a warning (see :func:`deprecated`)."""

    aliases: tuple[str, ...] = ()

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.aliases:
            seen = getattr(namespace, "_deprecated", [])
            namespace._deprecated = [*seen, (option_string, self.option_strings[0])]
        super().__call__(parser, namespace, values, option_string)


_ACTIONS: dict[Any, type] = {}


def _action_class(name: str | type) -> type:
    """argparse's action class ``name`` (or an action class) with :class:`_Deprecating` mixed in."""
    if name not in _ACTIONS:
        base = name if isinstance(name, type) else argparse.ArgumentParser()._registry_get("action", name)
        _ACTIONS[name] = type(f"Deprecating{base.__name__}", (_Deprecating, base), {})
    return _ACTIONS[name]


def deprecated(namespace: argparse.Namespace) -> list[tuple[str, str]]:
    """(old flag, new flag) for each hidden alias the command line used, each once."""
    return list(dict.fromkeys(getattr(namespace, "_deprecated", [])))


@dataclass
class Declared:
    """What :func:`add_options` added to a verb: its flags, and where each field's value is parsed to."""

    flags: dict[str, str] = dataclasses.field(default_factory=dict)
    """Parameter name (qualified by :attr:`Use.prefix`) → flag, for :func:`as_flags`."""
    dests: dict[tuple[type, str], str] = dataclasses.field(default_factory=dict)
    """(declaration class, field name) → argparse destination."""
    options: dict[str, Option] = dataclasses.field(default_factory=dict)
    """argparse destination → its declaration."""


def add_options(parser: argparse.ArgumentParser, uses: Iterable[Use]) -> Declared:
    """Add the declared fields of ``uses`` to ``parser``, one argument group per :data:`GROUPS` entry.

    The type and ``nargs`` come from the annotation, the default from the field (or the verb's
    :attr:`Use.defaults`), a field without a default is required. A boolean that defaults to False is a
    flag; one that defaults to True has its :attr:`Option.negate` flag. Aliases are accepted, hidden.
    The destination is the field name, after the use's prefix (``focus_min_count``).
    """
    result = Declared()
    groups: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for u in uses:
        defaults = dict(u.defaults)
        fields = [f for f in dataclasses.fields(u.cls) if declared(f) is not None and declared(f).cli
                  and (u.only is None or f.name in u.only)]
        names = {f.name for f in fields}
        for name in (*(u.only or ()), *u.required, *defaults):
            if name not in names:
                raise TypeError(f"{u.cls.__name__} declares no option {name!r}")
        needed = {declared(f).exclusive for f in fields if f.name in u.required}
        sets = [declared(f).exclusive for f in fields if declared(f).exclusive]
        for field in fields:
            how = declared(field)
            flag = flag_of(field)
            dest = u.prefix.replace(".", "_") + field.name
            qualified = u.prefix + field.name
            if qualified in result.flags or dest in result.options:
                raise TypeError(f"{qualified} ({u.cls.__name__}) is declared twice in one verb")
            result.dests[(u.cls, field.name)] = dest
            result.options[dest] = how
            kwargs = _argument(field, how, defaults, required=field.name in u.required)
            if how.group not in groups:
                groups[how.group] = parser.add_argument_group(how.group)
            target = groups[how.group]
            if how.exclusive and sets.count(how.exclusive) > 1:  # a set of one is a plain option
                if how.exclusive not in exclusive:
                    exclusive[how.exclusive] = target.add_mutually_exclusive_group(required=how.exclusive in needed)
                target = exclusive[how.exclusive]
                kwargs["required"] = False
            added = _add(target, flag, dest, how, kwargs)
            result.flags[qualified] = added.option_strings[0]
            if isinstance(added, argparse.BooleanOptionalAction):  # a boolean: which flag sets which value
                result.flags.update({f"{qualified}=True": flag, f"{qualified}=False": how.negate})
            elif added.nargs == 0 and isinstance(added.const, (bool, str)):  # `rows=all` → --all-rows
                result.flags[f"{qualified}={added.const}"] = added.option_strings[0]
    named = {g.title: g for g in parser._action_groups if g.title in GROUPS}  # GROUPS order, after argparse's own
    parser._action_groups[:] = [g for g in parser._action_groups if g.title not in GROUPS] + \
        [named[g] for g in GROUPS if g in named]
    if "advanced" in named:
        flags = [a.option_strings[0] for a in named["advanced"]._group_actions]
        named["advanced"].description = f"{', '.join(flags)} (--help-all describes them)"
    return result


def _argument(field: dataclasses.Field, how: Option, defaults: Mapping[str, Any], *, required: bool) -> dict:
    """argparse keyword arguments of a declared field."""
    if field.name in defaults:
        default = defaults[field.name]
    elif field.default is not MISSING:
        default = field.default
    elif field.default_factory is not MISSING:
        default = field.default_factory()
    else:
        default, required = None, True
    kwargs: dict[str, Any] = {"default": default, "help": how.help, "required": required}
    if how.const is not None:
        return {**kwargs, "action": "store_const", "const": how.const}
    kind, listed = (str, False) if how.parse else _annotation(field)
    if kind is bool:
        if how.negate and (default is None or (default is True and how.flag)):
            if how.negate != "--no-" + flag_of(field)[2:]:
                raise TypeError(f"{field.name}: the negation of {flag_of(field)} is --no-{flag_of(field)[2:]}")
            return {**kwargs, "action": "boolean"}  # --x / --no-x
        if default is True and not how.negate:
            raise TypeError(f"{field.name} defaults to True: declare the flag that turns it off (negate=...)")
        return {**kwargs, "action": "store_false" if default is True else "store_true"}
    kwargs["type"] = how.parse or kind
    if listed and how.repeat:
        kwargs["action"] = "append"
    elif listed or how.nargs:
        kwargs["nargs"] = how.nargs or "+"
    if how.choices:
        kwargs["choices"] = how.choices
    if how.metavar or kind in (int, float) and not how.choices:
        kwargs["metavar"] = how.metavar or ("N" if kind is int else "X")
    return kwargs


def _add(group, flag: str, dest: str, how: Option, kwargs: dict) -> argparse.Action:
    """One declared option; a boolean that defaults to True is only its ``negate`` flag."""
    action = kwargs.pop("action", "store")
    if action == "store_false":
        flag = how.negate
    cls = _action_class(argparse.BooleanOptionalAction) if action == "boolean" else _action_class(action)
    added = group.add_argument(flag, *how.aliases, dest=dest, action=cls, **kwargs)
    added.aliases = how.aliases
    added.declared = how
    return added


def values(args: argparse.Namespace, declared: Declared, *classes: type) -> dict[str, Any]:
    """The command line's value of each field of ``classes`` that the verb declares, by field name; an
    :attr:`Option.off` value becomes None."""
    found: dict[str, Any] = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            dest = declared.dests.get((cls, field.name))
            if dest is not None:
                value, off = getattr(args, dest), declared.options[dest].off
                found[field.name] = None if off is not None and value == off else value
    return found


# --- help -----------------------------------------------------------------------------------------

class Formatter(argparse.HelpFormatter):
    """A verb's help: hidden aliases left out; ``advanced`` options named in their group's description
    only, unless :attr:`everything` (``--help-all``); ``FILE...`` for one or more; descriptions wrapped
    line by line (their line breaks kept)."""

    everything = False

    def __init__(self, prog: str, **how: Any) -> None:
        super().__init__(prog, **{"max_help_position": 26, **how})

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent,
                                       break_on_hyphens=False) for line in text.splitlines())

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.nargs == argparse.ONE_OR_MORE:
            return "%s..." % self._metavar_formatter(action, default_metavar)(1)
        return super()._format_args(action, default_metavar)

    def add_argument(self, action: argparse.Action) -> None:
        how = getattr(action, "declared", None)
        if self.everything or how is None or how.group != "advanced":
            super().add_argument(action)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        aliases = getattr(action, "aliases", ())
        if aliases:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in aliases]
        return super()._format_action_invocation(action)


class FullFormatter(Formatter):
    everything = True


class HelpAll(argparse.Action):
    """``--help-all``: the help with the advanced options described."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        for group in parser._action_groups:
            if group.title == "advanced":
                group.description = None
        parser.formatter_class = FullFormatter
        parser.print_help()
        parser.exit()


def usage(parser: argparse.ArgumentParser) -> str:
    """A short usage line: the required options, then ``[options]``."""
    formatter = parser._get_formatter()
    shown = lambda a: f"{a.option_strings[0]} {formatter._format_args(a, formatter._get_default_metavar_for_optional(a))}"
    parts = []
    for group in parser._mutually_exclusive_groups:
        if group.required:
            parts.append("(" + " | ".join(shown(a) for a in group._group_actions) + ")")
    parts[:0] = [shown(a) for a in parser._actions if a.required and a.option_strings]
    return " ".join(["%(prog)s", *parts, "[options]"])


def token_count(text: str) -> int:
    """A count as the command line writes it: '2000000', '2M', '500k', '1.5e6' -> int."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token count; write e.g. 2000000, 2M or 500k") from None
    if not 1 <= value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r}: the token budget must be a finite count of at least 1")
    return int(value)

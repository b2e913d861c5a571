"""The option declarations and the command line generated from them (transtok.options)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from transtok.options import add_options, as_flags, option, use, values


@dataclass
class Knobs:
    path: list[str] = option(metavar="FILE", group="input", help="files")
    count: int | None = option(None, help="a count")
    ratio: float | None = option(3.0, off=0, group="advanced", help="0 turns it off")
    dedupe: bool = option(True, negate="--no-dedupe", help="keep repeats")
    chat: bool | None = option(None, negate="--no-chat", help="template")
    fast: bool = option(False, help="go fast")
    rows: str = option("auto", flag="--all-rows", const="all", help="every row")
    vocab: list[str] | None = option(None, repeat=True, help="repeat me")
    library_only: float = option(0.0, cli=False, help="not a flag")


@dataclass
class Nested:
    count: int = option(7, flag="--nested-count", help="another count")


def _parser(*uses):
    parser = argparse.ArgumentParser(exit_on_error=False)
    return parser, add_options(parser, uses)


def test_types_defaults_and_flags_come_from_the_declaration():
    parser, declared = _parser(use(Knobs), use(Nested, prefix="nested."))
    args = parser.parse_args(["--path", "a", "b", "--count", "3", "--ratio", "0", "--no-dedupe", "--no-chat",
                              "--all-rows", "--vocab", "x", "--vocab", "y", "--nested-count", "2"])
    assert values(args, declared, Knobs) == {"path": ["a", "b"], "count": 3, "ratio": None, "dedupe": False,
                                             "chat": False, "fast": False, "rows": "all", "vocab": ["x", "y"]}
    assert values(args, declared, Nested) == {"count": 2}
    defaults = parser.parse_args(["--path", "a"])
    assert values(defaults, declared, Knobs)["ratio"] == 3.0 and defaults.chat is None and defaults.dedupe
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "1"])  # --path has no default: required
    assert "--library-only" not in parser.format_help()


def test_messages_become_the_verbs_flags():
    _, declared = _parser(use(Knobs), use(Nested, prefix="nested."))
    flags = declared.flags
    assert as_flags("`count` 0 and `nested.count` 1", flags) == "--count 0 and --nested-count 1"
    assert as_flags("with `dedupe=False`, `chat=True` or `fast=True`", flags) == "with --no-dedupe, --chat or --fast"
    assert as_flags("`nested.ratio` falls back to `ratio`", flags) == "--ratio falls back to --ratio"
    assert as_flags("`library_only` and `unknown` stay", flags) == "`library_only` and `unknown` stay"


def test_a_verb_cannot_declare_one_name_twice():
    with pytest.raises(TypeError, match="declared twice"):
        _parser(use(Knobs, "count"), use(Knobs, "count"))
    with pytest.raises(TypeError, match="declares no option 'library_only'"):
        _parser(use(Knobs, "library_only"))


def test_no_backtick_reaches_a_command_line_user():
    """A setting the running verb does not declare (another verb's) is still spelled as a flag."""
    from transtok.options import as_flags_everywhere

    flags = {"min_count": "--min-count", "merge=False": "--no-merge"}
    message = ("`min_count` -1; mapped without `tied_head`; plain text (`chat=False`), or `chat=True`; "
               "`merge=False`; `focus.min_count`; `rows=all`")
    assert as_flags_everywhere(message, flags) == ("--min-count -1; mapped without --tied-head; plain text "
                                                   "(--no-chat), or --chat; --no-merge; --min-count; --rows all")
    assert "`" not in as_flags_everywhere("`a_b` and `c`", {})

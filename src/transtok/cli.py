"""Command-line interface: parses argv, calls the library, prints, exits.

Each verb has one ``_add_<verb>`` function that declares its flags and one ``_run_<verb>``
function that calls the library. Library errors (:class:`TranstokError`) become a one-line
message and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from transtok.errors import TranstokError

logger = logging.getLogger("transtok")

EPILOG = "Run 'transtok VERB --help' for the options of a verb."


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def verb(add):
    """Register ``add(subparsers)``, which declares one verb (or verb group) and its handler."""
    VERBS.append(add)
    return add


# --- verbs -----------------------------------------------------------------------------------
# Each @verb function adds one sub-parser and sets ``func`` to a ``_run_*`` handler taking the
# parsed arguments and returning an exit code. Handlers call the library and print results.



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transtok",
        description="Give a pretrained causal language model a new language (trans-tokenization).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for add in VERBS:
        add(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose < 2 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.func(args) or 0)
    except TranstokError as exc:
        if args.verbose:
            logger.exception("failed")
        print(f"transtok {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"transtok {args.verb}: interrupted; no partial output was kept", file=sys.stderr)
        return 130

"""The command line's own contract: what parsing costs and what --help shows."""
import json
import os
import subprocess
import sys

import pytest

from transtok.cli import build_parser, main

HEAVY = ("torch", "transformers", "scipy")


def _modules_after(code: str) -> set[str]:
    """Top-level modules imported by ``code`` in a fresh interpreter (this one has torch loaded already)."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_importing_the_cli_and_building_the_parser_loads_no_heavy_library():
    loaded = _modules_after("import transtok.cli; transtok.cli.build_parser()")
    assert "transtok" in loaded
    assert not loaded & set(HEAVY), f"parse time imports {sorted(loaded & set(HEAVY))}"


def test_a_bad_argument_fails_before_any_heavy_import():
    loaded = _modules_after("import transtok.cli\ntry:\n    transtok.cli.main(['map', '--top-k', 'many'])\n"
                            "except SystemExit as exc:\n    assert exc.code == 2")
    assert not loaded & set(HEAVY)


def _verbs(parser) -> dict:
    action = next(a for a in parser._actions if a.dest == "verb")
    return action.choices


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    verbs = _verbs(build_parser())
    assert {"demo", "align", "map", "transplant", "transfer", "finetune", "evaluate", "hydra", "translate",
            "assets", "train-tokenizer", "merge-alignments"} <= set(verbs)
    for name in verbs:
        assert f"    {name}" in text, f"{name} missing from --help"


@pytest.mark.parametrize("name", sorted(_verbs(build_parser())))
def test_every_verb_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"usage: transtok {name}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["map", "--top-k", "many"], "transtok map: error: argument --top-k: invalid int value: 'many'; "
                                 "see 'transtok map --help'"),
    (["finetune", "--lr", "abc", "--model", "m", "--text", "t", "--output", "o"],
     "transtok finetune: error: argument --lr: invalid float value: 'abc'; see 'transtok finetune --help'"),
    (["transfer"], "transtok transfer: error: the following arguments are required: "),
    (["frob"], "transtok: error: argument VERB: invalid choice: 'frob' "),
])
def test_a_malformed_command_line_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines

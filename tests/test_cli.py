"""The command line's own contract: what parsing costs and what --help shows."""
import argparse
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
    (["transplant", "--model", "m", "--mapping", "d", "--output", "o", "--dtype", "float64"],
     "transtok transplant: error: argument --dtype: invalid choice: 'float64' (choose from 'auto', 'float32', "),
    # an old flag is never named, even where argparse names every spelling of an option
    (["transfer", "--target-tokenizer", "t", "--target-corpus", "x"],
     "transtok transfer: error: argument --text: not allowed with argument --target-tokenizer; see "),
])
def test_a_malformed_command_line_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


# --- one declaration per setting, one name per concept ------------------------------------------

def _leaves(parser, prefix=()):
    """(verb, parser) for every verb, the actions of verb groups included (``evaluate perplexity``)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield " ".join(prefix), parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from _leaves(sub, (*prefix, name))


SHARED = ("--device", "--precision", "--dtype", "--aligner", "--segmenter", "--max-pairs", "--no-dedupe",
          "--max-length-ratio", "--unigram-prior", "--new-token-offset", "--offset-pairs", "--overwrite", "--init",
          "--min-count", "--top-k", "--focus-min-count", "--keep-reserved-tokens", "--from", "--to", "--instruction",
          "--max-new-tokens", "--json")
DIFFERENT = {  # the same name, a meaning that depends on the verb
    "--batch-size": "a batch of the verb's unit: training blocks, scoring windows, sequences, prompts",
    "--seq-len": "finetune's training block, evaluate perplexity's scoring window",
    "--seed": "the mapping's random rows and fastText, or the training run",
    "--chat": "hydra generate prompts plainly unless asked; translate and evaluate use a template when there is one",
    "--vocab-size": "train-tokenizer needs it (or --extend); transfer and demo default to the source model's size",
}


def test_a_shared_setting_reads_the_same_in_every_verb():
    """One declaration: a setting (not a verb's own input or output file) has the same help and choices
    wherever it appears."""
    seen: dict[str, dict] = {}
    for verb, parser in _leaves(build_parser()):
        for action in parser._actions:
            how = getattr(action, "declared", None)
            for flag in action.option_strings:
                if how is not None and flag.startswith("--") and flag not in how.aliases:
                    seen.setdefault(flag, {})[verb] = (action.help, tuple(action.choices or ()), how.group)
    for flag in SHARED:
        assert len(seen[flag]) >= 2, f"{flag} is in {sorted(seen[flag])} only"
    for flag, verbs in seen.items():
        own_files = {group for _, _, group in verbs.values()} <= {"input", "output"} and flag != "--overwrite"
        if len(verbs) > 1 and flag not in DIFFERENT and not own_files:
            assert len({(text, choices) for text, choices, _ in verbs.values()}) == 1, (flag, verbs)


def test_the_benchmarks_knobs_are_library_only():
    import dataclasses

    from transtok.mapping import MappingConfig
    from transtok.options import declared

    knobs = {f.name: declared(f) for f in dataclasses.fields(MappingConfig)
             if f.name in ("source_discount", "first_piece_weight")}
    assert len(knobs) == 2 and not any(how.cli for how in knobs.values())
    flags = {s for _, parser in _leaves(build_parser()) for a in parser._actions for s in a.option_strings}
    assert "--source-discount" not in flags and "--first-piece-weight" not in flags


@pytest.mark.parametrize("argv, build, flag_message", [
    (["map", "--min-count", "-1"], lambda: __import__("transtok.mapping").mapping.MappingConfig(min_count=-1.0),
     "--min-count must be a finite number >= 0"),
    (["map", "--init", "focus", "--focus-min-count", "0"],
     lambda: __import__("transtok.focus").focus.FocusConfig(min_count=0), "--focus-min-count must be an integer >= 1"),
    (["transfer", "--model", "m", "--parallel", "p", "--target-tokenizer", "t", "--offset-pairs", "0"],
     lambda: _transfer_config(offset_pairs=0), "--offset-pairs must be an integer >= 1"),
    (["transfer", "--model", "m", "--parallel", "p", "--mode", "extend", "--new-tokens", "5", "--vocab-size", "9"],
     lambda: _transfer_config(target_tokenizer=None, mode="extend", new_tokens=5, vocab_size=9),
     "--vocab-size is for --mode replace; with --mode extend give --new-tokens N"),
])
def test_the_library_names_parameters_and_the_command_line_flags(tmp_path, capsys, argv, build, flag_message):
    from transtok.errors import ConfigError
    from transtok.options import as_flags

    with pytest.raises(ConfigError) as exc:
        build()
    python = str(exc.value)
    assert "--" not in python and python.startswith("`")  # a Python caller reads its parameter names
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"transtok {argv[0]}: error: {as_flags(python, _flags_of(argv))}\n" and flag_message in err


def _transfer_config(**kw):
    from transtok.pipeline import TransferConfig

    return TransferConfig(**{"source_model": "m", "parallel": ["p"], "output": "o", "target_tokenizer": "t", **kw})


def _flags_of(argv):
    from transtok.cli import _parse

    return _parse([argv[0], *(["--model", "m", "--parallel", "p", "--output", "o"] if argv[0] == "transfer"
                              else ["--output", "o"])])._declared.flags


def test_verbosity_goes_before_or_after_the_verb():
    from transtok.cli import _parse

    assert _parse(["map", "--output", "o", "-v"]).verbose == 1
    assert _parse(["-v", "map", "--output", "o", "-vv"]).verbose == 3
    assert _parse(["evaluate", "perplexity", "--model", "m", "--text", "t", "-q"]).quiet
    assert not _parse(["map", "--output", "o"]).quiet


def test_an_old_flag_works_hidden_with_one_warning(tmp_path, capsys, caplog):
    from transtok.cli import _parse
    from transtok.options import deprecated

    args = _parse(["transfer", "--source-model", "m", "--parallel", "p", "--target-corpus", "t", "--output", "o",
                   "--source-model", "m2"])
    assert args.source_model == "m2" and args.target_corpus == ["t"]
    assert deprecated(args) == [("--source-model", "--model"), ("--target-corpus", "--text")]
    with caplog.at_level("WARNING", logger="transtok"):
        assert main(["map", "--target-text", "x.txt", "--min-count", "-1", "--output", str(tmp_path / "o")]) == 2
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == [
        "--target-text is deprecated, use --text; the old name goes in the next release"]
    for verb in ("transfer", "map", "align", "finetune", "train-tokenizer", "translate"):
        with pytest.raises(SystemExit):
            main([verb, "--help-all"])
        text = capsys.readouterr().out
        for old in ("--source-model", "--target-corpus", "--target-text", "--train ", "--corpus", "--input"):
            assert old not in text, (verb, old)


def test_transfer_help_fits_one_screen_and_help_all_describes_the_rest(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["transfer", "--help"])
    brief = capsys.readouterr().out
    assert len(brief.splitlines()) <= 50, brief
    titles = [line[:-1] for line in brief.splitlines() if line in ("input:", "output:", "method:", "device:",
                                                                   "advanced:")]
    assert titles == ["input", "output", "method", "device", "advanced"]
    assert "--min-count" in brief and "drop aligned token pairs" not in brief  # named, not described
    with pytest.raises(SystemExit):
        main(["transfer", "--help-all"])
    full = capsys.readouterr().out
    assert "drop aligned token pairs" in full and "--help-all describes them" not in full


def test_the_cli_log_names_flags_too():
    import logging

    from transtok.cli import _FlagNames

    record = logging.LogRecord("transtok.x", logging.INFO, __file__, 1, "%s pairs; relax `max_length_ratio`", (3,),
                               None)
    assert _FlagNames({"max_length_ratio": "--max-length-ratio"}).filter(record)
    assert record.getMessage() == "3 pairs; relax --max-length-ratio"

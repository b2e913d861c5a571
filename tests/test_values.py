"""Option and config values: NaN, infinity and out-of-range numbers, devices, shards, templates.

Each bad value is one line on stderr naming it, exit 2, and nothing written; the checks live in the
library (config dataclasses, function arguments) so that Python callers get them too.
"""
from __future__ import annotations

import json
import math

import pytest

import factories
from commandline import one_line, run
from transtok.artifacts import write_json
from transtok.checks import check_device, check_number
from transtok.errors import ConfigError

NAN, INF = float("nan"), float("inf")




@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("values")
    pairs = factories.cipher_corpus(200)
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "target.txt").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    (root / "source.txt").write_text("".join(f"{s}\n" for s, _ in pairs[:3]), encoding="utf-8")
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=350)
    target = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=330)
    model = factories.tiny_causal_lm("llama", len(source), False, source)
    model.save_pretrained(root / "model")
    source.save_pretrained(root / "model")
    target.save_pretrained(root / "target")
    assert run("-q", "align", "--model", root / "model", "--target-tokenizer", root / "target", "--parallel",
               root / "pairs.tsv", "--aligner", "fast_align", "--output", root / "alignment") == 0
    return root


def refused(capsys, tmp_path, *argv, names: tuple[str, ...]) -> str:
    """Run the CLI; assert exit 2, one stderr line naming each of ``names``, and no output."""
    assert run(*argv) == 2
    line = one_line(capsys.readouterr().err)
    for name in names:
        assert name in line, line
    assert not (tmp_path / "out").exists()
    return line


# --- map: mapping options -----------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [
    ("--sharpen", "nan"), ("--sharpen", "inf"), ("--sharpen", "0"),
    ("--confidence", "nan"), ("--confidence", "inf"), ("--copy-prior", "nan"), ("--copy-prior", "-1"),
    ("--min-count", "nan"), ("--copy-weight", "nan"), ("--copy-weight", "1.5"),
    ("--spelling-weight", "nan"), ("--top-k", "0"), ("--seed", "-1"),
])
def test_map_refuses_a_bad_number(ws, tmp_path, capsys, flag, value):
    line = refused(capsys, tmp_path, "map", "--alignment", ws / "alignment", "--output", tmp_path / "out", flag, value,
                   names=(flag, f"got {value}"))
    assert line.startswith("transtok map: error: ")


def test_map_refuses_a_nan_alignment_weight(ws, tmp_path, capsys):
    refused(capsys, tmp_path, "map", "--alignment", ws / "alignment", ws / "alignment", "--alignment-weights", "1",
            "nan", "--output", tmp_path / "out", names=("--alignment-weights", "got nan"))


def test_map_refuses_all_zero_alignment_weights(ws, tmp_path, capsys):
    refused(capsys, tmp_path, "map", "--alignment", ws / "alignment", ws / "alignment", "--alignment-weights", "0",
            "0", "--output", tmp_path / "out", names=("--alignment-weights 0.0 0.0 are all 0",))


def test_the_map_report_and_metadata_are_strict_json(ws, tmp_path):
    assert run("-q", "map", "--alignment", ws / "alignment", "--output", tmp_path / "out") == 0

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    files = sorted((tmp_path / "out").rglob("*.json"))
    assert any(p.name == "mapping_report.json" for p in files)
    for path in files:
        json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_write_json_refuses_nan_and_infinity(tmp_path):
    for value in (NAN, INF, -INF):
        with pytest.raises(ValueError):
            write_json(tmp_path / "x.json", {"aligned": value})


# --- align and transfer: corpus options ---------------------------------------------------------

@pytest.mark.parametrize("argv, names", [
    (["--shard", "²/3"], ("--shard '²/3' is not of the form K/N",)),
    (["--shard", "٣/3"], ("--shard '٣/3' is not of the form K/N",)),  # Arabic-Indic 3: int() would read it
    (["--shard", "0/3"], ("--shard 0/3 is not a shard",)),
    (["--max-length-ratio", "nan"], ("--max-length-ratio", "got nan")),
    (["--max-length-ratio", "inf"], ("--max-length-ratio", "got inf")),
    (["--max-length-ratio", "0.5"],
     ("--max-length-ratio", "or 0 at the command line, None in Python, to disable", "got 0.5")),
    (["--chunk-size", "0"], ("--chunk-size", "got 0")),
    (["--max-pairs", "0"], ("--max-pairs", "got 0")),
])
def test_align_refuses_a_bad_value(ws, tmp_path, capsys, argv, names):
    refused(capsys, tmp_path, "align", "--model", ws / "model", "--target-tokenizer", ws / "target",
            "--parallel", ws / "pairs.tsv", "--aligner", "fast_align", "--output", tmp_path / "out", *argv, names=names)


@pytest.mark.parametrize("argv, names", [
    (["--max-length-ratio", "nan"], ("--max-length-ratio", "got nan")),
    (["--max-pairs", "0"], ("--max-pairs", "got 0")),
    (["--sharpen", "nan"], ("--sharpen", "got nan")),
    (["--unigram-prior", "inf"], ("--unigram-prior", "got inf")),
])
def test_transfer_refuses_a_bad_value_before_any_work(ws, tmp_path, capsys, argv, names):
    refused(capsys, tmp_path, "transfer", "--model", ws / "model", "--parallel", ws / "pairs.tsv",
            "--target-tokenizer", ws / "target", "--output", tmp_path / "out", *argv, names=names)


def test_transplant_checks_offset_pairs_first(tmp_path, capsys):
    # the mapping does not exist: the number is checked before anything is read
    refused(capsys, tmp_path, "transplant", "--model", tmp_path / "none", "--mapping", tmp_path / "none",
            "--offset-pairs", "0", "--output", tmp_path / "out", names=("--offset-pairs", "got 0"))


# --- finetune -----------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [
    ("--weight-decay", "-1"), ("--weight-decay", "nan"), ("--warmup", "nan"), ("--warmup", "inf"),
    ("--warmup", "2.5"), ("--lr", "0"), ("--lr", "nan"), ("--max-grad-norm", "inf"), ("--max-grad-norm", "-1"),
    ("--lora-alpha", "0"), ("--lora-dropout", "1"), ("--lora-dropout", "nan"), ("--lora-rank", "0"),
    ("--seed", "-1"), ("--save-every", "-1"),
])
def test_finetune_refuses_a_bad_number(tmp_path, capsys, flag, value):
    (tmp_path / "train.txt").write_text("text\n", encoding="utf-8")
    line = refused(capsys, tmp_path, "finetune", "--model", tmp_path / "none", "--text", tmp_path / "train.txt",
                   "--output", tmp_path / "out", flag, value, names=(flag,))
    assert f"got {value}" in line or f"warmup {value}" in line or f"got {float(value)}" in line


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_finetune_refuses_an_infinite_token_budget(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        run("finetune", "--model", "m", "--text", "t", "--output", tmp_path / "out", f"--max-tokens={value}")
    assert exc.value.code == 2
    assert f"'{value}': the token budget must be a finite count" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_finetune_warmup_takes_whole_steps_or_a_fraction():
    from transtok.finetune import FinetuneConfig

    for warmup in (0, 0.03, 0.999, 1, 5.0, 20):
        assert FinetuneConfig(model="m", train=["t"], output="o", warmup=warmup).warmup == warmup


# --- evaluate --device --------------------------------------------------------------------------

@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the values must be refused before."""
    import transtok.hydra
    import transtok.loading

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(transtok.loading, "load_model", load)
    monkeypatch.setattr(transtok.hydra.Hydra, "from_checkpoints", load)
    monkeypatch.setattr(transtok.hydra.Hydra, "from_pretrained", load)


@pytest.mark.parametrize("device, names", [
    ("banana", ("--device 'banana' is not a device", "cuda:N")),
    ("cuda:x", ("--device 'cuda:x' is not a device",)),
    ("meta", ("--device meta", "cpu, cuda, mps")),
    ("cuda", ("--device cuda: CUDA is not available on this machine", "use --device cpu")),
    ("cuda:1", ("--device cuda:1: CUDA is not available on this machine",)),
])
def test_evaluate_checks_the_device_before_loading_the_model(ws, tmp_path, capsys, monkeypatch, no_model_load,
                                                             device, names):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused(capsys, tmp_path, "evaluate", "perplexity", "--model", ws / "model", "--text", ws / "target.txt",
            "--device", device, names=names)


def test_evaluate_perplexity_checks_its_device_argument(ws):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transtok.evaluate import evaluate_perplexity

    model, tokenizer = AutoModelForCausalLM.from_pretrained(ws / "model"), AutoTokenizer.from_pretrained(ws / "model")
    with pytest.raises(ConfigError, match="`device` 'banana' is not a device"):
        evaluate_perplexity(model, tokenizer, ["some text"], seq_len=16, device="banana")


def test_a_device_names_its_form():
    assert check_device("auto") is None and check_device(None) is None
    assert str(check_device("cpu")) == "cpu"


# --- translate and hydra generate ---------------------------------------------------------------

@pytest.mark.parametrize("instruction, names", [
    ("Translate {text", ("--instruction 'Translate {text' has a stray brace", "{{ or }}")),
    ("Translate } {text}", ("has a stray brace", "Single '}'")),
    ("{lang}: {text}", ("has the field {lang}", "{text}, {source_language}, {target_language}")),
    ("{0} {text}", ("has the field {0}",)),
    ("{text.upper}", ("has the field {text.upper}",)),
    ("{text!r}", ("has the field {text!r}",)),
    ("{text:>9}", ("has the field {text:>9}",)),
])
def test_translate_checks_the_instruction_before_loading_the_model(ws, tmp_path, capsys, no_model_load,
                                                                    instruction, names):
    refused(capsys, tmp_path, "translate", "--model", ws / "model", "--from", "en", "--to", "es", "--text",
            ws / "source.txt", "--output", tmp_path / "out", "--instruction", instruction, names=names)


@pytest.mark.parametrize("flag, value", [
    ("--repetition-penalty", "0"), ("--repetition-penalty", "-1"), ("--repetition-penalty", "nan"),
    ("--repetition-penalty", "inf"), ("--num-beams", "0"), ("--no-repeat-ngram", "-1"), ("--max-new-tokens", "0"),
    ("--batch-size", "0"),
])
@pytest.mark.parametrize("verb", ["translate", "generate"])
def test_generation_options_are_checked_before_loading_the_model(ws, tmp_path, capsys, no_model_load, verb, flag,
                                                                 value):
    head = (["translate", "--model", ws / "model", "--from", "en", "--to", "es", "--text", ws / "source.txt"]
            if verb == "translate" else
            ["hydra", "generate", "--model", ws / "model", "--prompt", "hi", "--prompt-vocab", "model"])
    line = refused(capsys, tmp_path, *head, "--output", tmp_path / "out", flag, value, names=(flag,))
    assert f"got {value}" in line or f"got {float(value)}" in line


def test_a_template_with_doubled_braces_and_known_fields_is_accepted():
    from transtok.hydra import DEFAULT_INSTRUCTION, check_instruction

    for template in (DEFAULT_INSTRUCTION, "{{json}}: {text} ({source_language} -> {target_language})", "plain"):
        assert check_instruction(template) == template


@pytest.mark.parametrize("kwargs, name", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": NAN}, "temperature"), ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"repetition_penalty": NAN}, "`repetition_penalty`"),
    ({"max_new_tokens": 2.5}, "`max_new_tokens`"),
])
def test_check_generation_refuses_what_generate_would_misuse(kwargs, name):
    from transtok.hydra import check_generation

    with pytest.raises(ConfigError, match=f"^{name} must be"):
        check_generation(**kwargs)
    check_generation(temperature=0.7, top_p=1.0, repetition_penalty=1.2, num_beams=4, no_repeat_ngram_size=3)


# --- the library: every float field of the config dataclasses ------------------------------------

def _mapping(**kw):
    from transtok.mapping import MappingConfig

    return MappingConfig(**kw)


def _focus(**kw):
    from transtok.focus import FocusConfig

    return FocusConfig(**kw)


def _finetune(**kw):
    from transtok.finetune import FinetuneConfig

    return FinetuneConfig(model="m", train=["t"], output="o", **kw)


def _transfer(**kw):
    from transtok.pipeline import TransferConfig

    return TransferConfig(source_model="m", parallel=["p"], output="o", target_tokenizer="t", **kw)


@pytest.mark.parametrize("make, field, value", [
    *[(_mapping, f, v) for f in ("sharpen", "confidence", "copy_prior", "min_count", "source_discount")
      for v in (NAN, INF, -1.0)],
    *[(_mapping, f, v) for f in ("copy_weight", "spelling_weight", "head_spelling_weight", "first_piece_weight")
      for v in (NAN, -0.1, 1.1)],
    (_mapping, "sharpen", 0.0), (_mapping, "top_k", 2.5), (_mapping, "seed", 2**40),
    *[(_focus, f, v) for f in ("dim", "epochs", "threads", "min_count") for v in (0, 2.5)],
    *[(_finetune, f, v) for f in ("lr", "warmup", "weight_decay", "max_grad_norm", "lora_alpha", "lora_dropout")
      for v in (NAN, INF, -1.0)],
    (_finetune, "lr", 0.0), (_finetune, "lora_dropout", 1.0), (_finetune, "batch_size", 2.0),
    (_finetune, "max_tokens", 1e6), (_finetune, "eval_every", 0), (_finetune, "new_rows_from", -1),
    (_transfer, "max_length_ratio", NAN), (_transfer, "max_length_ratio", INF), (_transfer, "max_pairs", 0),
    (_transfer, "offset_pairs", 0), (_transfer, "new_token_offset", NAN), (_transfer, "unigram_prior", INF),
])
def test_config_fields_refuse_nan_infinity_and_out_of_range(make, field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "[-_]")):
        make(**{field: value})


def test_combining_mappings_refuses_nan_weights():
    from transtok.mapping import TokenMapping

    with pytest.raises(ConfigError, match="one finite weight >= 0 per mapping"):
        TokenMapping.combine([object(), object()], [1.0, NAN])


def test_clean_refuses_an_infinite_length_ratio():
    from transtok.corpus import ParallelCorpus, clean

    with pytest.raises(ConfigError, match="`max_length_ratio` must be a finite number >= 1"):
        clean(ParallelCorpus(["a"], ["b"]), max_length_ratio=INF)


# --- the checker itself -------------------------------------------------------------------------

@pytest.mark.parametrize("value, kwargs, message", [
    (NAN, {"low": 0, "low_open": True}, "x must be a finite number > 0, got nan"),
    (INF, {"low": 0}, "x must be a finite number >= 0, got inf"),
    (-INF, {}, "x must be a finite number, got -inf"),
    (0.5, {"low": 0, "high": 1, "high_open": True, "hint": "a share"}, None),
    (1.0, {"low": 0, "high": 1, "high_open": True, "hint": "a share"}, "x must be a finite number in [0, 1) (a share), "
                                                                         "got 1.0"),
    (True, {}, "x must be a finite number, got True"),
    ("3", {}, "x must be a finite number, got '3'"),
    (3.0, {"low": 1, "integer": True}, "x must be an integer >= 1, got 3.0"),
    (3, {"low": 1, "integer": True}, None),
])
def test_check_number(value, kwargs, message):
    if message is None:
        assert check_number("x", value, **kwargs) == value
        return
    with pytest.raises(ConfigError) as exc:
        check_number("x", value, **kwargs)
    assert str(exc.value) == message


def test_numpy_scalars_are_numbers():
    import numpy as np

    assert check_number("x", np.float32(0.5), low=0) == 0.5
    with pytest.raises(ConfigError, match="got nan$"):
        check_number("x", np.float64(math.nan))

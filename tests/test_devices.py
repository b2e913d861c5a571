"""--device and --precision: one rule for every verb that runs the model, checked before any work."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from safetensors.torch import load_file

import factories
from commandline import run
from transtok.calibration import passes_in_bf16
from transtok.checks import pick_bf16, pick_device
from transtok.errors import ConfigError



def test_auto_is_cuda_when_available_else_cpu(monkeypatch):
    assert pick_device(None) == pick_device("auto") == torch.device("cpu")  # no GPU in tests
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_precision_rules(monkeypatch):
    import transtok.checks

    assert pick_bf16("fp32", "cpu") is False and pick_bf16("bf16", "cpu") is True and pick_bf16(True, "cpu")
    with pytest.raises(ConfigError, match="`precision` 'fp16' is not one of auto, bf16, fp32"):
        pick_bf16("fp16", "cpu")
    monkeypatch.setattr(transtok.checks, "bf16_supported", lambda device: True)
    assert pick_bf16("auto", "cpu") is True  # evaluation: bf16 wherever it is native
    assert passes_in_bf16("auto", "cpu") is False  # the calibration passes stay fp32 on the CPU
    assert passes_in_bf16("bf16", "cpu") is True and passes_in_bf16("auto", "cuda") is True


VERBS = {
    "transfer": ["transfer", "--model", "M", "--parallel", "P.tsv", "--text", "T.txt", "--output",
                 "OUT"],
    "transplant": ["transplant", "--model", "M", "--mapping", "MAP", "--parallel", "P.tsv", "--output", "OUT"],
    "demo": ["demo", "--output", "OUT"],
    "finetune": ["finetune", "--model", "M", "--text", "T.txt", "--output", "OUT"],
    "evaluate": ["evaluate", "perplexity", "--model", "M", "--text", "T.txt"],
    "translate": ["translate", "--model", "M", "--from", "en", "--to", "es", "--text", "IN.txt"],
    "hydra generate": ["hydra", "generate", "--model", "M", "--prompt-vocab", "en", "--prompt", "hi"],
    "calibrate": ["calibrate", "--model", "M", "--text", "T.txt", "--output", "OUT"],
}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("device, message", [
    ("banana", "--device 'banana' is not a device; use auto, cpu, cuda, cuda:N"),
    ("cuda", "--device cuda: CUDA is not available on this machine"),
])
def test_every_verb_that_runs_the_model_checks_its_device_before_any_work(verb, device, message, tmp_path,
                                                                        capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # every input named above is missing: the device is checked first
    assert run(*VERBS[verb], "--device", device) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_transfer_runs_its_passes_where_asked_and_records_it(tmp_path, caplog):
    pairs = factories.cipher_corpus(300)
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=330)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    heads = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        with caplog.at_level(logging.INFO, logger="transtok"):
            assert run("transfer", "--model", tmp_path / "source", "--parallel", tmp_path / "pairs.tsv",
                       "--text", tmp_path / "pairs.tsv", "--aligner", "fast_align", "--device", "cpu",
                       "--precision", precision, "--output", out) == 0
        saved = json.loads((out / "transtok/config.json").read_text())
        assert saved["device"] == "cpu" and saved["precision"] == precision
        assert f"{precision} on cpu" in caplog.text
        heads[precision] = load_file(out / "model.safetensors")["lm_head.weight"]
    first = next(r for r in caplog.records if r.name.startswith("transtok"))
    assert first.getMessage().startswith("transfer on cpu: ")  # the device in the log's first line
    # bf16 passes estimate the same prior to bf16's precision: close, not equal
    assert not torch.equal(heads["fp32"], heads["bf16"])
    assert torch.allclose(heads["fp32"], heads["bf16"], atol=0.05)


def test_finetune_trains_where_asked(monkeypatch):
    from transtok.finetune import FinetuneConfig, _training_device

    assert _training_device("auto") == "cpu" and _training_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _training_device("auto") == "cuda" and _training_device("cuda") == "cuda"
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=1 and `device` cuda"):
        FinetuneConfig(model="m", train=["t"], output="o", device="cuda:1")

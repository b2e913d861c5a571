"""The unigram prior's forward pass in fp32 or bf16 autocast on the CPU: its time and the dev figures.

For each language: ``transtok transfer`` on the Bible's training books without the prior (defaults
otherwise), then the prior fitted on that model in fp32 and in bf16 autocast (where the CPU computes bf16
natively: AVX512-BF16 or AMX), each scored on the dev books (James .. 3 John; windows of 512 moved by 128).
Writes results.json and results.md to --out; says which CPU it ran on.

    python benchmarks/prior_precision.py --langs es ru --out benchmarks/results/prior_precision
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transtok.assets import parallel_bible, smollm2_checkpoint  # noqa: E402
from transtok.calibration import apply_unigram_prior  # noqa: E402
from transtok.checks import bf16_supported  # noqa: E402
from transtok.evaluate import DEFAULT_STRIDE, eval_seq_len, evaluate_perplexity  # noqa: E402
from transtok.loading import load_model  # noqa: E402
from transtok.pipeline import TransferConfig, transfer  # noqa: E402

logger = logging.getLogger("prior_precision")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def untrained_transfer(lang: str, work: Path, source: str):
    """(the en-``lang`` Bible split, the directory of ``transfer`` on its training books without the prior
    (defaults otherwise, made once under ``work/lang/no-prior``), that transfer's step seconds: None where an
    older run made it without recording them)."""
    split = parallel_bible("en", lang)
    data = work / lang
    data.mkdir(parents=True, exist_ok=True)
    split.train.write_tsv(data / "train.tsv")
    (data / "train.txt").write_text("".join(f"{t}\n" for t in split.train.target), encoding="utf-8")
    model_dir, seconds = data / "no-prior", data / "transfer_seconds.json"
    if not (model_dir / "config.json").is_file():
        result = transfer(TransferConfig(source_model=source, parallel=[str(data / "train.tsv")],
                                         target_corpus=[str(data / "train.txt")], output=str(model_dir),
                                         unigram_prior=0, overwrite=True, device="cpu"))
        seconds.write_text(json.dumps(result.seconds) + "\n")
    return split, model_dir, json.loads(seconds.read_text()) if seconds.is_file() else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["es", "ru"])
    parser.add_argument("--work", default="runs/prior_precision")
    parser.add_argument("--out", default="benchmarks/results/prior_precision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    source = str(smollm2_checkpoint())
    for lang in args.langs:
        split, model_dir, _ = untrained_transfer(lang, work, source)
        for precision in ("fp32", "bf16"):
            model, tokenizer = load_model(str(model_dir))
            start = time.perf_counter()
            prior = apply_unigram_prior(model, tokenizer, split.train.target, bf16=precision == "bf16")
            seconds = time.perf_counter() - start
            seq_len = eval_seq_len(model)
            scored = evaluate_perplexity(model, tokenizer, split.dev.target, seq_len=seq_len,
                                         stride=min(DEFAULT_STRIDE, seq_len))
            rows.append({"lang": lang, "precision": precision, "prior_seconds": round(seconds, 2),
                         "dev_bits_per_byte": scored.bits_per_byte, "signature": scored.signature,
                         "bias_mean_abs": prior.report()["bias_mean_abs"], "texts": prior.texts})
            logger.info("%s %s: prior %.1f s, dev %.4f", lang, precision, seconds, scored.bits_per_byte)
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "native_bf16": bf16_supported("cpu")}
    (out / "results.json").write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=2)
                                      + "\n")
    lines = [f"CPU: {machine['cpu']}, {machine['cores']} cores, native bf16: {machine['native_bf16']}", "",
             "| language | prior pass | seconds | dev bits per byte |", "|---|---|---|---|"]
    lines += [f"| {r['lang']} | {r['precision']} | {r['prior_seconds']:.1f} | {r['dev_bits_per_byte']:.4f} |"
              for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Benchmark of ``transtok finetune`` on a real model.

1. Throughput and peak memory of each stage (embeddings, 2x2, full, lora): a few steps each, every
   stage in its own process so that the peak resident memory (CUDA: peak allocated) is its own.
2. Held-out bits per byte of ``--recipe paper`` (embeddings 38%, then 2x2 62%) against
   embeddings-only for the same token budget, evaluated every few steps.

Default setup: SmolLM2-135M-Instruct transferred to Spanish by ``transtok.demo`` (built on first
use, or pass ``--model DIR``), trained on the Reina-Valera 1909 books outside the held-out ones,
evaluated on the first ``--eval-lines`` verses of Jude + Revelation. The defaults fit in about
10 minutes on 2 CPU cores; on a GPU raise ``--budget``, ``--seq-len`` and ``--batch-size``.

    python benchmarks/finetune.py --model transtok-demo-es --json benchmarks/finetune.json

Prints two tables and writes everything (commands included) as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("embeddings", "2x2", "full", "lora")


def _data_dir(path: str | None) -> Path:
    if path:
        return Path(path)
    from transtok.assets import cached_split

    return cached_split("en", "es")


def _model_dir(path: str | None, workdir: Path) -> Path:
    if path:
        return Path(path)
    from transtok.demo import run_demo

    return Path(run_demo("es", workdir / "demo-es", overwrite=True).output)


def _finetune(args: argparse.Namespace, workdir: Path, name: str, extra: list[str]) -> dict:
    """Run one ``transtok finetune`` in a fresh process; return its finetune.json plus wall time."""
    output = workdir / name
    command = [sys.executable, "-m", "transtok", "-q", "finetune", "--model", str(args.model),
               "--text", str(args.data / "train.txt"), "--output", str(output), "--overwrite",
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--warmup", str(args.warmup), "--seed", str(args.seed), "--save-every", "0", "--log-every", "1",
               "--precision", args.precision, *extra]
    env = dict(os.environ)
    if args.threads:
        # On a shared, oversubscribed CPU one thread per process beats two (barrier stalls)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    record = json.loads((output / "transtok" / "finetune.json").read_text())
    shutil.rmtree(output, ignore_errors=True)
    record["wall_seconds"] = time.perf_counter() - started
    record["command"] = " ".join(command[1:])
    return record


def _token_count(text: str) -> int:
    scale = {"k": 10**3, "m": 10**6}.get(text[-1:].lower(), 1)
    return int(float(text[:-1] if scale != 1 else text) * scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="transferred model directory (default: build the Spanish demo model)")
    parser.add_argument("--data", help="directory with train.txt and test.txt (default: the demo's Bible split)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--speed-steps", type=int, default=5,
                        help="optimizer steps per throughput run (the first, warm-up step is not timed)")
    parser.add_argument("--budget", type=_token_count, default=26 * 2 * 128,
                        help="training tokens of each curve run (default: %(default)s = 26 steps: 10 + 16 "
                             "for the paper recipe, so evaluations every 5 steps line up)")
    parser.add_argument("--eval-every", type=int, default=5, help="steps between evaluations")
    parser.add_argument("--eval-lines", type=int, default=60, help="held-out verses scored")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, help="OMP threads per training process (default: torch's)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--json", default="finetune-benchmark.json", help="where to write the results")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="transtok-finetune-bench-"))
    try:
        args.data = _data_dir(args.data)
        args.model = _model_dir(args.model, workdir)
        held_out = (args.data / "test.txt").read_text(encoding="utf-8").splitlines()[: args.eval_lines]
        eval_file = workdir / "eval.txt"
        eval_file.write_text("\n".join(held_out) + "\n", encoding="utf-8")
        tokens_per_step = args.seq_len * args.batch_size
        results: dict = {"model": str(args.model), "data": str(args.data), "eval_lines": len(held_out),
                         "eval_bytes": len("\n".join(held_out).encode()), "tokens_per_step": tokens_per_step,
                         "lr": args.lr, "seed": args.seed, "python": platform.python_version(),
                         "cpus": os.cpu_count(), "threads": args.threads, "speed": [], "curves": {}}

        if not args.skip_speed:
            for stage in args.stages:
                record = _finetune(args, workdir, f"speed-{stage}",
                                   ["--stage", stage, "--max-tokens", str(args.speed_steps * tokens_per_step)])
                s = record["stages"][0]
                results["speed"].append({
                    "stage": stage, "trainable_parameters": s["trainable_parameters"],
                    "total_parameters": s["total_parameters"], "tokens_per_second": s["tokens_per_second"],
                    "peak_memory_gib": s["peak_memory_bytes"] / 2**30, "steps": s["steps"],
                    "precision": record["precision"], "wall_seconds": record["wall_seconds"],
                    "command": record["command"]})
            print(f"\nThroughput per stage ({args.speed_steps - 1} timed steps of {args.batch_size} x {args.seq_len} tokens, "
                  f"{results['speed'][0]['precision']}, {os.cpu_count()} CPU cores)")
            print(f"{'stage':<12}{'trainable':>14}{'tokens/s':>10}{'peak GiB':>10}")
            for row in results["speed"]:
                print(f"{row['stage']:<12}{row['trainable_parameters']:>14,}{row['tokens_per_second']:>10,.0f}"
                      f"{row['peak_memory_gib']:>10.2f}")

        if not args.skip_curve:
            common = ["--eval", str(eval_file), "--eval-every", str(args.eval_every), "--max-tokens", str(args.budget)]
            for name, what in (("paper", ["--recipe", "paper"]), ("embeddings", ["--stage", "embeddings"])):
                record = _finetune(args, workdir, f"curve-{name}", what + common)
                results["curves"][name] = {
                    "curve": [(r["tokens"], r["eval_bits_per_byte"]) for r in record["history"]
                              if "eval_bits_per_byte" in r],
                    "stages": record["stages"], "wall_seconds": record["wall_seconds"], "command": record["command"],
                    "eval_signature": record["eval"]["signature"]}
            curves = {k: dict(v["curve"]) for k, v in results["curves"].items()}
            print(f"\nHeld-out bits per byte ({len(held_out)} verses of Jude + Revelation), budget "
                  f"{args.budget:,} tokens, lr {args.lr}")
            print(f"{'tokens':>10}{'paper':>10}{'emb-only':>10}")
            for tokens in sorted(set(curves["paper"]) | set(curves["embeddings"])):
                cells = [f"{curves[k][tokens]:>10.4f}" if tokens in curves[k] else f"{'':>10}"
                         for k in ("paper", "embeddings")]
                print(f"{tokens:>10,}" + "".join(cells))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

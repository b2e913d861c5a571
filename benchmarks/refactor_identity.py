"""Byte identity across a refactor: the same alignment through ``transfer``, ``map`` + ``transplant`` and the
init-methods benchmark, with the SHA-256 of every mapping and checkpoint file written.

eflomal samples from system entropy, so the alignment is made once (``--work``) and reused: run this before
a change with ``--label before`` and after it with ``--label after`` on the same ``--work``; the two results
files must list the same hashes. Also records the line counts of cli.py, pipeline.py and benchmarks/.

    python benchmarks/refactor_identity.py --label before
    python benchmarks/refactor_identity.py --label after

(The before/after files of issue 28 were written with ``--source-model``, the name the code before it knew.)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

logger = logging.getLogger("refactor_identity")
PAIRS = 4000
VOCAB = 8000


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(directory: Path, names=("model.safetensors", "mapping.safetensors", "mapping.json", "tokenizer.json")) -> dict:
    """SHA-256 of the weight, mapping and tokenizer files under ``directory`` (provenance JSON holds paths and
    versions, which may differ)."""
    return {str(p.relative_to(directory)): sha(p) for p in sorted(directory.rglob("*")) if p.name in names}


def line_counts() -> dict:
    count = lambda p: sum(1 for _ in open(p, encoding="utf-8"))  # noqa: E731
    bench = sorted((ROOT / "benchmarks").glob("*.py"))
    return {"cli.py": count(ROOT / "src/transtok/cli.py"), "pipeline.py": count(ROOT / "src/transtok/pipeline.py"),
            "benchmarks/*.py": sum(count(p) for p in bench)}


def fixed_alignment(align_dir: Path):
    """Patch every ``align`` the library imported so that it returns the saved counts: one alignment for all."""
    import transtok
    import transtok.align
    from transtok.align import AlignmentCounts

    original = transtok.align.align

    def saved(*args, **kwargs):
        return AlignmentCounts.load(align_dir)

    for name, module in list(sys.modules.items()):
        if (name.startswith("transtok") or name == "init_methods") and getattr(module, "align", None) is original:
            module.align = saved
    del transtok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True)
    parser.add_argument("--work", default="runs/refactor_identity")
    parser.add_argument("--out", default="benchmarks/results/refactor_identity")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from transtok.assets import smollm2_checkpoint
    from transtok.loading import load_tokenizer
    from transtok.tokenizer import train_tokenizer

    import init_methods  # benchmarks/init_methods.py

    work = Path(args.work)
    source = smollm2_checkpoint()
    split = init_methods.bible_split("es", work / "es")
    tsv = work / "pairs.tsv"
    cache = work / "es" / "cache" / f"vocab{VOCAB}"
    align_dir = cache / "align-eflomal"
    if not (align_dir / "alignment.json").is_file():  # made once, then reused by every label
        from transtok.align import align

        tsv.write_text("".join(f"{s}\t{t}\n" for s, t in zip(split.train.source[:PAIRS], split.train.target[:PAIRS])),
                       encoding="utf-8")
        target = train_tokenizer(split.train.target[:PAIRS], load_tokenizer(str(source)), VOCAB)
        target.save_pretrained(cache / "tokenizer")
        from transtok.corpus import read_parallel

        counts = align(read_parallel([str(tsv)]), load_tokenizer(str(source)), load_tokenizer(str(cache / "tokenizer")))
        counts.save(align_dir)
        for side, tok in (("source_tokenizer", str(source)), ("target_tokenizer", str(cache / "tokenizer"))):
            load_tokenizer(tok).save_pretrained(align_dir / side)
    fixed_alignment(align_dir)
    out = work / args.label
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    record: dict = {"label": args.label, "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                                                  text=True, cwd=ROOT).stdout.strip(),
                    "lines": line_counts(), "pairs": PAIRS, "vocab": VOCAB}

    # 1. map + transplant (streaming, no prior), and transplant with the prior (in memory), from the saved alignment
    from transtok.cli import main as cli

    def run(*argv: str) -> None:
        code = cli(list(argv))
        if code:
            raise SystemExit(f"transtok {' '.join(argv)} exited {code}")

    run("map", "--alignment", str(align_dir), "--output", str(out / "map"))
    run("transplant", "--model", str(source), "--mapping", str(out / "map"), "--output", str(out / "plain"))
    run("transplant", "--model", str(source), "--mapping", str(out / "map"), "--parallel", str(tsv),
        "--output", str(out / "prior"), "--device", "cpu")
    # 2. transfer with the same target tokenizer and the same (patched) alignment
    run("transfer", "--model", str(source), "--parallel", str(tsv), "--target-tokenizer",
        str(cache / "tokenizer"), "--output", str(out / "transfer"), "--device", "cpu")
    # 3. the init-methods benchmark's trans-tokenization model from the same tokenizer and alignment, not scored
    init_methods.evaluate_perplexity = lambda model, tokenizer, texts, **kw: type(
        "R", (), {"bits_per_byte": 0.0, "tokens": 0, "signature": "", "stride": kw.get("stride")})()
    bench = init_methods.parse_args(["--langs", "es", "--methods", "trans-tokenization", "--budget", "0",
                                     "--vocab-size", str(VOCAB), "--unigram-prior", "1", "--work", str(work),
                                     "--out", str(out / "bench-results")])
    init_methods.run_language("es", bench, source, split)
    for name in ("map", "plain", "prior", "transfer"):
        record[name] = hashes(out / name)
    record["benchmark"] = hashes(work / "es" / "init-trans-tokenization")
    results = Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.label}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

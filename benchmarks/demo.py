"""The README's demo block, with a results file behind it: runs ``transtok demo`` and writes its table
(demo_LANG.txt, exactly what the command prints) and its result (demo_LANG.json) to --out.

    python benchmarks/demo.py --lang es --out benchmarks/results/demo
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transtok.demo import format_result, run_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="es")
    parser.add_argument("--out", default="benchmarks/results/demo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="transtok-demo-") as tmp:
        result = run_demo(args.lang, Path(tmp) / f"transtok-demo-{args.lang}")
        result.output = Path(f"transtok-demo-{args.lang}")  # as the command's default output names it
        table = format_result(result)
    print(table)
    (out / f"demo_{args.lang}.txt").write_text(table + "\n", encoding="utf-8")
    record = {**result.to_dict(), "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    (out / f"demo_{args.lang}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")


if __name__ == "__main__":
    main()

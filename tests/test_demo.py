"""The demo's code path with the asset layer replaced by tiny local files (no network)."""
import pytest

import factories
from transtok import assets
from transtok.cli import main
from transtok.corpus import ParallelCorpus


@pytest.fixture()
def tiny_assets(tmp_path, monkeypatch):
    pairs = factories.cipher_corpus(500)
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=350)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(tmp_path / "smollm2")
    source.save_pretrained(tmp_path / "smollm2")

    class Split:
        train = ParallelCorpus([s for s, _ in pairs[:450]], [t for _, t in pairs[:450]])
        test = ParallelCorpus([s for s, _ in pairs[450:]], [t for _, t in pairs[450:]])

    def write_split(split, directory, overwrite=False, **_):
        directory.mkdir(parents=True, exist_ok=True)
        split.train.write_tsv(directory / "train.tsv")
        (directory / "train.txt").write_text("\n".join(split.train.target) + "\n")
        (directory / "test.txt").write_text("\n".join(split.test.target) + "\n")
        (directory / "split.json").write_text("{}")
        return directory

    monkeypatch.setattr(assets, "smollm2_checkpoint", lambda: tmp_path / "smollm2")
    monkeypatch.setattr(assets, "parallel_bible", lambda *a, **k: Split())
    monkeypatch.setattr(assets, "write_split", write_split)
    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    return tmp_path


def test_demo_prints_the_before_after_table(tiny_assets, capsys):
    out = tiny_assets / "demo-out"
    assert main(["demo", "--lang", "xx", "--output", str(out), "--vocab-size", "320", "--aligner", "fast_align"]) == 0
    text = capsys.readouterr().out
    for row in ("tokens per word", "held-out bits per byte", "source model:", "transferred:"):
        assert row in text
    assert (out / "config.json").is_file() and (out / "transtok" / "mapping_report.json").is_file()
    # A second run refuses to overwrite the model without --overwrite.
    assert main(["demo", "--lang", "xx", "--output", str(out), "--vocab-size", "320", "--aligner", "fast_align"]) == 2


def test_demo_scores_a_stated_sample_prints_each_steps_time_and_draws_the_before_after(tiny_assets, capsys,
                                                                                    monkeypatch):
    import json
    import xml.dom.minidom

    from transtok import demo

    monkeypatch.setattr(demo, "DEMO_VERSES", 20)
    out = tiny_assets / "demo-sample"
    assert main(["demo", "--lang", "xx", "--output", str(out), "--aligner", "fast_align", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_verses"] == 20
    assert {"assets", "transfer_align", "transfer_prior", "evaluate", "generate"} <= set(result["seconds"])
    picture = xml.dom.minidom.parse(str(out / "transtok" / "demo.svg"))
    bars = picture.getElementsByTagName("rect")
    assert len(bars) == 4  # source and transferred, for bits per byte and for tokens
    labels = [t.firstChild.data for t in picture.getElementsByTagName("text")]
    assert f"{result['bits_per_byte']['source']:.3f}" in labels and f"{result['tokens']['transferred']:,}" in labels
    text = demo.format_result(demo.DemoResult(**{**result, "output": out}))
    assert "the first 20 verses of Jude and Revelation" in text and "(assets " in text and "demo.svg" in text


def test_demo_vocabulary_defaults_to_the_source_models_size(tiny_assets, capsys):
    import json

    out = tiny_assets / "demo-default"
    assert main(["demo", "--lang", "xx", "--output", str(out), "--aligner", "fast_align"]) == 0
    config = json.loads((out / "transtok" / "config.json").read_text())
    assert config["vocab_size"] == 350 and config["unigram_prior"] == 1.0  # the source's size; the prior on


def test_cached_split_is_reused_until_the_verse_cleaning_changes(tiny_assets, monkeypatch):
    import json

    built = []
    real_write = assets.write_split

    def counting_write(split, directory, overwrite=False, **options):
        built.append(directory)
        real_write(split, directory, overwrite, **options)
        (directory / "split.json").write_text(json.dumps({"clean_verse_version": assets.CLEAN_VERSE_VERSION}))
        return directory

    monkeypatch.setattr(assets, "write_split", counting_write)
    first = assets.cached_split("en", "xx")
    assert first == tiny_assets / "cache" / "demo" / "en-xx" and len(built) == 1
    assert assets.cached_split("en", "xx") == first and len(built) == 1
    (first / "split.json").write_text(json.dumps({"clean_verse_version": assets.CLEAN_VERSE_VERSION - 1}))
    assets.cached_split("en", "xx")
    assert len(built) == 2

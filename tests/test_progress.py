"""Log lines carry rounded figures."""
import logging

import pytest

from transtok.progress import duration, timings


@pytest.mark.parametrize("seconds, text", [(0.0, "0 s"), (0.9374167899999293, "0.94 s"), (1.04, "1.0 s"),
                                           (9.96, "10.0 s"), (38.2, "38 s"), (59.6, "60 s"), (60.2, "1 min"),
                                           (125.4, "2 min 5 s"), (3599.6, "1 h"), (3780, "1 h 3 min"),
                                           (7200, "2 h")])
def test_duration_rounds_to_what_a_reader_needs(seconds, text):
    assert duration(seconds) == text


def test_timings_keep_the_order_and_drop_the_digits():
    text = timings({"load": 0.9374167899999293, "tokenizer": 20.123, "align": 38.51})
    assert text == "load 0.94 s, tokenizer 20 s, align 39 s"
    with pytest.raises(ValueError, match="negative"):
        duration(-1)


def test_alignment_announces_its_size_and_expected_time(caplog):
    import factories
    from transtok.align import align, expected_time
    from transtok.corpus import ParallelCorpus

    pairs = factories.cipher_corpus(60)
    tokenizer = factories.byte_level_tokenizer([s for s, _ in pairs] + [t for _, t in pairs], 300)
    corpus = ParallelCorpus([s for s, _ in pairs], [t for _, t in pairs])
    with caplog.at_level(logging.INFO, logger="transtok.align"):
        align(corpus, tokenizer, tokenizer, aligner="fast_align")
    first = caplog.messages[0]
    assert first.startswith("aligning 60 sentence pairs with fast_align (no estimate")
    assert "aligned 60 pairs: " in caplog.messages[-1]
    assert not any("0000" in m for m in caplog.messages)  # no raw floats
    assert expected_time("unknown", 10) == "no estimate for this aligner"
    assert expected_time("eflomal", 30_000).startswith("about 46 s on 2 idle CPU cores")

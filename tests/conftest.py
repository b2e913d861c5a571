import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

import factories  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run ~10x faster on one thread than on two contended ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cipher_pairs():
    return factories.cipher_corpus(1500)


@pytest.fixture(scope="session")
def source_tokenizer(cipher_pairs):
    return factories.byte_level_tokenizer([s for s, _ in cipher_pairs], vocab_size=300)


@pytest.fixture(scope="session")
def target_tokenizer(cipher_pairs):
    return factories.byte_level_tokenizer([t for _, t in cipher_pairs], vocab_size=320)

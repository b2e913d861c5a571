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


PROCESS_WIDE = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")
"""Environment variables that an in-process CLI run sets for the rest of the process (-q, progress bars)."""


@pytest.fixture(autouse=True)
def no_state_between_tests():
    """What one test leaves in the process does not reach the next: the environment variables that an
    in-process CLI run sets, outputs still claimed, and subprocesses a failed test left paused."""
    import commandline
    from transtok import artifacts

    before = {name: os.environ.get(name) for name in PROCESS_WIDE}
    yield
    commandline.kill_leftovers()
    artifacts.release_all()
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

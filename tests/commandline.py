"""Running the CLI in tests: in process (:func:`run`) or as a real subprocess paused at a named point
(:func:`start`, :func:`reached`, :func:`finish`; see :func:`transtok.artifacts.pause_point`), and
reading what it left (:func:`one_line`, :func:`leftovers`)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transtok import artifacts
from transtok.cli import main

SRC = Path(artifacts.__file__).parents[1]


def run(*argv) -> int:
    """``transtok ARGV`` in this process; its exit code."""
    return main([str(a) for a in argv])


def one_line(err: str) -> str:
    """The only non-blank line of ``err`` (fails the test when there are more)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def leftovers(directory: Path, name: str) -> list[str]:
    """Output ``name`` itself and every hidden .name.* sibling (partial outputs, scratch, locks)."""
    return sorted(p.name for p in directory.iterdir() if p.name == name or p.name.startswith(f".{name}."))


def subprocess_env(pause: str | None, flags: Path, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp)}
    env.pop(artifacts.PAUSE_ENV, None)
    if pause:
        env[artifacts.PAUSE_ENV] = f"{pause}:{flags}"
    return env


def start(argv: list, tmp_path: Path, pause: str | None = None) -> subprocess.Popen:
    """``python -m transtok ARGV`` with its own TMPDIR, paused at ``pause`` (wait for it with :func:`reached`)."""
    (tmp_path / "flags").mkdir(exist_ok=True)
    (tmp_path / "systmp").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "transtok", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(pause, tmp_path / "flags", tmp_path / "systmp"))


def reached(process: subprocess.Popen, tmp_path: Path, stage: str, timeout: float = 120) -> Path:
    """Wait until ``process`` waits at ``stage``; the flag file to remove to let it go on."""
    flag = tmp_path / "flags" / stage
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {stage}: {process.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, f"the run did not reach {stage}"
        time.sleep(0.05)
    return flag


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Exit code and stderr of ``process`` once it ends."""
    _, err = process.communicate(timeout=120)
    return process.returncode, err

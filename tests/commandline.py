"""Running the CLI in tests: in process (:func:`run`) or as a real subprocess paused at a named point
(:func:`start`, :func:`reached`, :func:`finish`; see :func:`transtok.artifacts.pause_point`), and
reading what it left (:func:`one_line`, :func:`leftovers`)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from transtok import artifacts
from transtok.cli import main

SRC = Path(artifacts.__file__).parents[1]
HANG = 600
"""Seconds after which a subprocess that has not reached its pause point or ended is taken to hang. It
bounds a hang, never a speed: a loaded machine may take minutes where an idle one takes a second."""
STARTED: list[subprocess.Popen] = []
"""Processes from :func:`start`; :func:`kill_leftovers` (after every test, see conftest.py) kills those a
failed test left paused."""


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


@contextlib.contextmanager
def ctrl_c_not_ignored():
    """Children started inside see Ctrl-C (SIGINT) as a terminal would send it, even when this process
    ignores it (a test run started in the background by a non-interactive shell: ``pytest &``). An
    ignored signal stays ignored across exec, so a child would never see the SIGINT a test sends; a
    handled one is reset to the default at exec, where Python installs its KeyboardInterrupt."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not ignored or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(argv: list, tmp_path: Path, pause: str | None = None) -> subprocess.Popen:
    """``python -m transtok ARGV`` with its own TMPDIR, paused at ``pause`` (wait for it with :func:`reached`)."""
    (tmp_path / "flags").mkdir(exist_ok=True)
    (tmp_path / "systmp").mkdir(exist_ok=True)
    with ctrl_c_not_ignored():
        process = subprocess.Popen([sys.executable, "-m", "transtok", *map(str, argv)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   env=subprocess_env(pause, tmp_path / "flags", tmp_path / "systmp"))
    STARTED.append(process)
    return process


def reached(process: subprocess.Popen, tmp_path: Path, stage: str, timeout: float = HANG) -> Path:
    """Wait until ``process`` waits at ``stage`` (it has written the flag file there and polls it); the
    flag file to remove to let it go on. Fails, killing the process, if it ends first or hangs."""
    flag = tmp_path / "flags" / stage
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {stage}: {process.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run did not reach {stage} in {timeout:.0f} s: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return flag


def finish(process: subprocess.Popen, timeout: float = HANG) -> tuple[int, str]:
    """Exit code and stderr of ``process`` once it ends (killed, and the test failed, if it hangs)."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the run did not end in {timeout:.0f} s: {process.communicate()[1][-2000:]}")
    return process.returncode, err


def kill_leftovers() -> None:
    """Kill what :func:`start` started and is still running (a test that failed before it ended)."""
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()

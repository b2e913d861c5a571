"""Atomic output directories: all or nothing, and the permissions of a plain mkdir."""
import os

import pytest

from transtok.artifacts import atomic_output_dir
from transtok.errors import ConfigError


def test_success_renames_into_place_with_mkdir_permissions(tmp_path):
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("x")
    assert (tmp_path / "out" / "a.txt").read_text() == "x"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing_and_keeps_the_old_output(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "new") as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []

    with atomic_output_dir(tmp_path / "old") as tmp:  # --overwrite replaces only what transtok wrote
        (tmp / "keep.txt").write_text("old")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        with atomic_output_dir(tmp_path / "old"):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "old", overwrite=True):
            raise RuntimeError("interrupted")
    assert (tmp_path / "old" / "keep.txt").read_text() == "old"
    with atomic_output_dir(tmp_path / "old", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == [".transtok-output", "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["old"]

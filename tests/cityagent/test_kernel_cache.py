"""The compiled kernels' cache directories: old versions' directories do not pile up."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cityagent.detectors._jit import STALE_CACHE_S, prune_stale_caches


def _cache(root: Path, name: str, age_s: float) -> Path:
    path = root / name
    path.mkdir()
    (path / "kernel.nbi").write_bytes(b"x")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_only_other_versions_unused_for_a_month_are_removed(tmp_path: Path) -> None:
    current = _cache(tmp_path, "numba-0.68.1-aaaa", 2 * STALE_CACHE_S)  # old but in use
    stale = _cache(tmp_path, "numba-0.68.1-bbbb", STALE_CACHE_S + 3600)
    recent = _cache(tmp_path, "numba-0.68.1-cccc", STALE_CACHE_S - 3600)
    unrelated = _cache(tmp_path, "something-else", 2 * STALE_CACHE_S)

    assert prune_stale_caches(current) == [stale]
    assert not stale.exists()
    assert current.is_dir() and recent.is_dir() and unrelated.is_dir()
    assert (current / "kernel.nbi").exists()


def test_files_and_a_missing_current_directory_are_no_error(tmp_path: Path) -> None:
    current = _cache(tmp_path, "numba-0.68.1-aaaa", 0)
    old_file = tmp_path / "numba-0.68.1-file"
    old_file.write_bytes(b"not a directory")
    then = time.time() - 2 * STALE_CACHE_S
    os.utime(old_file, (then, then))
    assert prune_stale_caches(tmp_path / "numba-0.68.1-missing") == []
    assert old_file.exists() and current.is_dir()

"""Outputs appear complete or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from biomedclip.atomic_io import atomic_directory, atomic_write_bytes, file_mode

pytestmark = pytest.mark.unit


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_a_written_file_gets_the_mode_the_umask_gives_not_the_temp_files_0600(tmp_path):
    """A teammate on a shared workspace reads the metrics and reports (umask 022: 0644)."""
    previous = os.umask(0o027)
    file_mode.cache_clear()
    try:
        atomic_write_bytes(tmp_path / "metrics.json", b"{}")
        assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o640
    finally:
        os.umask(previous)
        file_mode.cache_clear()
    atomic_write_bytes(tmp_path / "report.md", b"#")
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o666 & ~previous


def test_directory_is_replaced_only_when_the_block_succeeds(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(ValueError), atomic_directory(final) as staging:
        (staging / "a.txt").write_text("second")
        raise ValueError("killed half-way")
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_directory(final) as staging:
        (staging / "b.txt").write_text("third")
    assert [p.name for p in final.iterdir()] == ["b.txt"]


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path):
    final = tmp_path / "out"
    (tmp_path / ".out.partial-99999").mkdir()
    (tmp_path / ".out.partial-99999" / "half.txt").write_text("x")
    (tmp_path / ".out.old-99999").mkdir()
    with atomic_directory(final) as staging:
        (staging / "whole.txt").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

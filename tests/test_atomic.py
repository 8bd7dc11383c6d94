"""The one atomic-write context manager (insarslide.atomic.atomic_path)."""

from __future__ import annotations

import pytest

from insarslide.atomic import atomic_path, write_text_atomic


class Interrupted(Exception):
    pass


def test_the_file_appears_only_after_the_block(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("done")
        assert not target.exists()  # nothing under the final name while writing
    assert target.read_text() == "done" and [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_an_error_inside_the_block_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(Interrupted):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Interrupted
    assert list(tmp_path.iterdir()) == []


def test_an_error_keeps_the_previous_complete_file(tmp_path):
    target = write_text_atomic(tmp_path / "out.txt", "old")
    with pytest.raises(Interrupted):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise Interrupted
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_the_temporary_file_has_the_permissions_of_a_plain_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == plain.stat().st_mode

"""The one settings comparison (insarslide.settings.differences), with hand-written records."""

from __future__ import annotations

from insarslide.settings import differences


def test_leaves_that_differ_are_named_by_dotted_path():
    old = {"window": {"size": 256, "overlap": 0.5}, "bands": ["vv", "coh"], "seed": 1}
    new = {"window": {"size": 256, "overlap": 0.25}, "bands": ("vv", "coh"), "extra": True, "seed": 1}
    assert differences(old, new) == ["extra: '<absent>' -> True", "window.overlap: 0.5 -> 0.25"]


def test_equal_records_have_no_difference_and_lists_equal_tuples():
    assert differences({"a": [1, 2], "b": {"c": None}}, {"a": (1, 2), "b": {"c": None}}) == []


def test_ignored_names_are_left_out_with_their_subtrees():
    old = {"n_jobs": 1, "out_dir": "/a", "trainer": {"devices": 1, "precision": 32}, "seed": 1}
    new = {"n_jobs": 8, "out_dir": "/b", "trainer": {"devices": 4, "precision": 16}, "seed": 1}
    assert differences(old, new, ignore={"n_jobs", "out_dir", "trainer.devices"}) == ["trainer.precision: 32 -> 16"]
    assert differences(old, new, ignore={"n_jobs", "out_dir", "trainer"}) == []


def test_the_line_and_the_root_name_are_the_callers():
    assert differences([1], [2], "bands", line="{name}: checkpoint {found!r}, this run {expected!r}") == [
        "bands: checkpoint [1], this run [2]"]

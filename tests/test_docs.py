"""The README and docs say what the code and configs do (the parts a new user trips on)."""

from __future__ import annotations

import re

from conftest import CONF, REPO

README = (REPO / "README.md").read_text()


def test_readme_model_table_lists_every_model_config():
    row = next(line for line in README.splitlines() if line.startswith("| `model` |"))
    for config in sorted((CONF / "model").glob("*.yaml")):
        assert f"`{config.stem}`" in row, f"README's model row omits model={config.stem}"


def test_readme_cross_references_point_the_right_way():
    headings = [m.start() for m in re.finditer(r"^## ", README, flags=re.M)]
    for ref in re.finditer(r"\*([A-Z][\w ]+)\* (above|below)", README):
        target = re.search(rf"^## {re.escape(ref.group(1))}", README, flags=re.M)
        assert target is not None, f"README refers to a missing section {ref.group(1)!r}"
        here = max(h for h in headings if h < ref.start())
        assert (target.start() < here) == (ref.group(2) == "above"), f"{ref.group(0)!r}: the section is not {ref.group(2)}"

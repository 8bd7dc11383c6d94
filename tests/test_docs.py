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
    refs = list(re.finditer(r"\*([A-Z][\w\s]+)\*\s(above|below)", README))
    assert refs, "the README's cross-references were not found"
    for ref in refs:
        name = " ".join(ref.group(1).split())
        target = re.search(rf"^## {re.escape(name)}", README, flags=re.M)
        assert target is not None, f"README refers to a missing section {name!r}"
        here = max(h for h in headings if h < ref.start())
        assert (target.start() < here) == (ref.group(2) == "above"), f"{ref.group(0)!r}: the section is not {ref.group(2)}"

"""The one comparison of two settings records (nested mappings): which leaves differ, named by dotted path.

Used wherever a stored record must match the present settings: a checkpoint's
record against this run's (:mod:`insarslide.training.checkpoints`), a scene's
provenance against predict's settings (:mod:`insarslide.inference.predict`), a
synthetic data set's settings against the configured ones
(``data_prep.synthetic``). Each caller names at its call site the keys that do
not count (``ignore``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

ABSENT = "<absent>"  # stands for a key one side lacks
CHANGE = "{name}: {found!r} -> {expected!r}"


def differences(found: Any, expected: Any, name: str = "", *, ignore: Collection[str] = (),
                line: str = CHANGE) -> list[str]:
    """One ``line`` (formatted with ``name``, ``found``, ``expected``) per leaf where ``found`` and ``expected`` differ.

    Mappings are compared key by key (a key one side lacks reads as ``"<absent>"``),
    lists and tuples as lists; ``ignore`` holds dotted names (``"trainer.devices"``)
    left out of the comparison, subtrees included.
    """
    if name in ignore:
        return []
    if isinstance(found, Mapping) and isinstance(expected, Mapping):
        out: list[str] = []
        for key in sorted(set(found) | set(expected), key=str):
            out += differences(found.get(key, ABSENT), expected.get(key, ABSENT), f"{name}.{key}" if name else str(key),
                               ignore=ignore, line=line)
        return out
    if isinstance(found, (list, tuple)) and isinstance(expected, (list, tuple)):
        found, expected = list(found), list(expected)
    return [] if found == expected else [line.format(name=name, found=found, expected=expected)]

"""The thesis's event catalogue (Table 4.1) as data: ``events.csv`` beside this file.

Used to fill scene attributes that a producer left out and to name regions for
leave-region-out splits. Event ids follow the data contract (``[a-z0-9_]+``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CATALOGUE_PATH = Path(__file__).with_name("events.csv")


@dataclass(frozen=True)
class Event:
    event_id: str
    region: str
    country: str
    event_start: str
    event_end: str
    pre_date: str
    post_date: str

    @property
    def region_label(self) -> str:
        """Region as scene files write it, e.g. ``Lombok, Indonesia``."""
        return f"{self.region}, {self.country}"


@lru_cache(maxsize=1)
def load_catalogue(path: Path = CATALOGUE_PATH) -> dict[str, Event]:
    with open(path, newline="") as handle:
        events = [Event(**row) for row in csv.DictReader(handle)]
    return {e.event_id: e for e in events}


def fill_scene_attrs(attrs: dict) -> dict:
    """Scene attributes with gaps (empty or missing) filled from the catalogue, if the event is in it."""
    event = load_catalogue().get(str(attrs.get("event_id", "")))
    filled = dict(attrs)
    if event is None:
        return filled
    defaults = {"region": event.region_label, "event_start": event.event_start, "event_end": event.event_end,
                "pre_date": event.pre_date, "post_date": event.post_date}
    for key, value in defaults.items():
        if not str(filled.get(key, "")).strip():
            filled[key] = value
    return filled

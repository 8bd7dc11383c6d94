"""Choose the pre/post-event pair: per relative orbit the tightest bracket of the event that covers the area.

An acquisition is *pre-event* when its date is before the first event day and
*post-event* when it is on or after the last event day (``post_on_event_end``;
Table 4.1 of the thesis pairs Tiburon 2021 with an image of the last event
day), or strictly after it otherwise. Only acquisitions whose footprint covers
at least ``min_coverage_pct`` of the area count. Per relative orbit the latest
pre-event and the earliest post-event acquisition give the shortest temporal
baseline; orbits are ranked by baseline, then by the smaller coverage of the
two images (higher first), then by how close the pre-event image is to the
event, then by orbit number. When no orbit qualifies, :class:`NoPairError`
says why for each orbit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from itertools import groupby
from operator import attrgetter
from pathlib import Path

from data_prep.acquire.catalogue import Product

COVERAGE_TOLERANCE_PCT = 1e-6  # float noise of polygon intersection areas


class NoPairError(RuntimeError):
    """No relative orbit has a qualifying pre/post pair; ``reasons`` holds one line per orbit."""

    def __init__(self, event: str, reasons: list[str]):
        self.reasons = reasons
        super().__init__(f"no pre/post-event pair for {event}:\n  " + "\n  ".join(reasons))


@dataclass(frozen=True)
class OrbitOption:
    """The best pair of one relative orbit, or why it has none."""

    relative_orbit: int
    orbit_direction: str
    pre: Product | None = None
    post: Product | None = None
    reason: str | None = None

    @property
    def baseline_days(self) -> int | None:
        if self.pre is None or self.post is None:
            return None
        return (self.post.date - self.pre.date).days

    def label(self) -> str:
        return f"relative orbit {self.relative_orbit} {self.orbit_direction}"


def is_post_event(day: date, event_end: date, post_on_event_end: bool) -> bool:
    return day >= event_end if post_on_event_end else day > event_end


def _best_for_orbit(products: list[Product], event_start: date, event_end: date, min_coverage_pct: float,
                    post_on_event_end: bool, product_type: str) -> OrbitOption:
    orbit, direction = products[0].relative_orbit, products[0].orbit_direction
    slc = [p for p in products if p.product_type == product_type]
    if not slc:
        types = sorted({p.product_type for p in products})
        return OrbitOption(orbit, direction, reason=f"only {', '.join(types)} products, no {product_type}")
    covering = [p for p in slc if p.coverage_pct + COVERAGE_TOLERANCE_PCT >= min_coverage_pct]
    if not covering:
        best = max(p.coverage_pct for p in slc)
        return OrbitOption(orbit, direction, reason=f"area not covered: the best of {len(slc)} acquisition(s) covers "
                                                    f"{best:.1f}% (need {min_coverage_pct:g}%)")
    pre = [p for p in covering if p.date < event_start]
    post = [p for p in covering if is_post_event(p.date, event_end, post_on_event_end)]
    if not post:
        latest = max(p.date for p in covering)
        return OrbitOption(orbit, direction, reason=f"no post-event image yet: the latest covering acquisition is "
                                                    f"{latest} (event ends {event_end})")
    if not pre:
        earliest = min(p.date for p in covering)
        return OrbitOption(orbit, direction, reason=f"no pre-event image in the window: the earliest covering "
                                                    f"acquisition is {earliest} (event starts {event_start})")
    # Latest pre, earliest post; on equal dates the better-covering (then alphabetically first) product wins.
    best_pre = min(pre, key=lambda p: (-p.date.toordinal(), -p.coverage_pct, p.name))
    best_post = min(post, key=lambda p: (p.date.toordinal(), -p.coverage_pct, p.name))
    return OrbitOption(orbit, direction, pre=best_pre, post=best_post)


def rank_orbits(products: list[Product], event_start: date, event_end: date, *, min_coverage_pct: float = 100.0,
                post_on_event_end: bool = True, product_type: str = "IW_SLC__1S") -> list[OrbitOption]:
    """One :class:`OrbitOption` per relative orbit: qualifying pairs first (best first), then those without."""
    if event_end < event_start:
        raise ValueError(f"event ends ({event_end}) before it starts ({event_start})")
    key = attrgetter("relative_orbit", "orbit_direction")
    options = [_best_for_orbit(list(group), event_start, event_end, min_coverage_pct, post_on_event_end, product_type)
               for _, group in groupby(sorted(products, key=key), key=key)]
    paired = [o for o in options if o.reason is None]
    paired.sort(key=lambda o: (o.baseline_days, -min(o.pre.coverage_pct, o.post.coverage_pct),
                               (event_start - o.pre.date).days, o.relative_orbit))
    return paired + [o for o in options if o.reason is not None]


def select_pair(products: list[Product], event: str, event_start: date, event_end: date, **rules) -> list[OrbitOption]:
    """The ranked options with a qualifying pair first; :class:`NoPairError` when there is none."""
    options = rank_orbits(products, event_start, event_end, **rules)
    if not options:
        raise NoPairError(event, ["no product in the search (see the reason above the table)"])
    if options[0].reason is not None:
        raise NoPairError(event, [f"{o.label()}: {o.reason}" for o in options])
    return options


def pair_record(options: list[OrbitOption], *, event: str, event_start: date, event_end: date, aoi_wkt: str,
                search: dict) -> dict:
    """The content of ``pair.json``: the chosen pair, how it was searched, and the other orbits."""
    chosen = options[0]
    alternatives = []
    for option in options[1:]:
        entry = {"relative_orbit": option.relative_orbit, "orbit_direction": option.orbit_direction}
        if option.reason is None:
            entry |= {"baseline_days": option.baseline_days, "pre": option.pre.name, "post": option.post.name}
        else:
            entry["reason"] = option.reason
        alternatives.append(entry)
    return {"event": event, "event_start": event_start.isoformat(), "event_end": event_end.isoformat(),
            "baseline_days": chosen.baseline_days, "pre": chosen.pre.to_json(), "post": chosen.post.to_json(),
            "aoi_wkt": aoi_wkt, "search": search, "alternatives": alternatives}


class PairFileError(ValueError):
    """A ``pair.json`` cannot be used; the message names the file and the key."""


def read_pair(path: str | Path) -> dict:
    """A ``pair.json`` checked for what the download needs (``pre``/``post`` with ``name`` and ``id``)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise PairFileError(f"pair={path}: no such file")
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise PairFileError(f"{path}: not valid JSON ({exc})") from None
    for role in ("pre", "post"):
        entry = record.get(role)
        if not isinstance(entry, dict):
            raise PairFileError(f"{path}: key '{role}' missing or not an object")
        for key in ("name", "id"):
            if not str(entry.get(key) or "").strip():
                raise PairFileError(f"{path}: '{role}.{key}' missing or empty")
        if "/" in entry["name"] or "\\" in entry["name"] or entry["name"].startswith("."):
            raise PairFileError(f"{path}: '{role}.name' {entry['name']!r} is not a product name")
    return record

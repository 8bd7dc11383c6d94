"""CF no-data and packing attributes of a stored variable, applied when a scene band is read.

``_FillValue`` and ``missing_value`` (any number of values) and ``valid_min``,
``valid_max`` or ``valid_range`` mark no-data, compared in stored units as CF
defines them; ``scale_factor``/``add_offset`` unpack. SNAP exports write their
no-data this way (``_FillValue`` 0 after Terrain-Correction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class BandDecoder:
    """Turns a variable's stored values into float32 with NaN for no-data (CF attributes honoured).

    No-data: ``_FillValue``, ``missing_value``, outside ``valid_min``/``valid_max``/``valid_range``
    (all in stored units, as CF defines them); then ``scale_factor``/``add_offset``,
    the SNAP conversion and the sign.
    """

    fill_values: tuple[float, ...] = ()
    valid_min: float | None = None
    valid_max: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    to_canonical: str = "none"
    sign: float = 1.0

    def no_data(self, raw: np.ndarray) -> np.ndarray:
        """Mask of the pixels the attributes mark as no-data."""
        bad = self._marked(raw)
        return np.zeros(raw.shape, dtype=bool) if bad is None else bad

    def _marked(self, raw: np.ndarray) -> np.ndarray | None:
        """``None`` when nothing is marked; a NaN fill of a float variable needs no mask (NaN stays NaN)."""
        bad = None
        floating = np.issubdtype(raw.dtype, np.floating)
        for fill in self.fill_values:
            if np.isnan(fill):
                hit = None if floating else np.zeros(raw.shape, dtype=bool)
            else:
                hit = raw == np.asarray(fill).astype(raw.dtype)
            if hit is not None:
                bad = hit if bad is None else bad | hit
        for bound, outside in ((self.valid_min, np.less), (self.valid_max, np.greater)):
            if bound is not None:
                hit = outside(raw, bound)
                bad = hit if bad is None else bad | hit
        return bad

    def decode(self, raw: np.ndarray) -> np.ndarray:
        bad = self._marked(raw)
        values = raw.astype(np.float32, copy=False)
        if self.scale != 1.0 or self.offset != 0.0:
            values = values * np.float32(self.scale) + np.float32(self.offset)
        if self.to_canonical == "db_to_linear":
            values = np.power(np.float32(10.0), values / np.float32(10.0), dtype=np.float32)
        if self.sign != 1.0:
            values = -values
        if bad is not None and bad.any():
            values = values.copy() if values is raw else values  # never write into the caller's array
            values[bad] = np.nan
        return values


def decoder_from_attrs(attrs: Mapping, to_canonical: str = "none", sign: float = 1.0) -> BandDecoder:
    fills: list[float] = []
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            fills.extend(float(v) for v in np.atleast_1d(attrs[key]))
    valid_min = attrs.get("valid_min")
    valid_max = attrs.get("valid_max")
    if "valid_range" in attrs:
        valid_min, valid_max = (float(v) for v in np.atleast_1d(attrs["valid_range"])[:2])
    return BandDecoder(
        fill_values=tuple(fills),
        valid_min=None if valid_min is None else float(valid_min),
        valid_max=None if valid_max is None else float(valid_max),
        scale=float(attrs.get("scale_factor", 1.0)),
        offset=float(attrs.get("add_offset", 0.0)),
        to_canonical=to_canonical,
        sign=sign,
    )

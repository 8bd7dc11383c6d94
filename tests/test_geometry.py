"""The one pixel-area rule (insarslide.contract.geometry), against hand-worked areas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pyproj import CRS

from insarslide.contract.geometry import patch_pixel_area_km2, pixel_area_m2, row_pixel_areas_m2

UTM33N = CRS.from_epsg(32633).to_wkt()
WGS84 = CRS.from_epsg(4326).to_wkt()
US_FEET = CRS.from_epsg(2227).to_wkt()  # California zone 3, US survey feet

# WGS84: a = 6378137 m, f = 1/298.257223563, e^2 = f(2 - f)
A = 6378137.0
ES = (1 / 298.257223563) * (2 - 1 / 298.257223563)
D = math.radians(0.001)


def hand_cell_m2(lat_mid_deg: float) -> float:
    """M(phi) * N(phi) * cos(phi) * dphi * dlambda at the cell's mid-latitude: the radii of curvature of the
    ellipsoid, meridian M = a(1-e^2)/W^3 and prime vertical N = a/W, W = sqrt(1 - e^2 sin^2 phi). The midpoint
    rule's error over a 0.001 degree cell is ~ dphi^2/24 * 3 ~ 4e-11 relative, hence the 1e-9 tolerance."""
    phi = math.radians(lat_mid_deg)
    w = math.sqrt(1 - ES * math.sin(phi) ** 2)
    meridian, prime_vertical = A * (1 - ES) / w**3, A / w
    return meridian * prime_vertical * math.cos(phi) * D * D


def test_a_30_m_utm_pixel_is_900_m2():
    assert float(pixel_area_m2(UTM33N, 30.0, -30.0, 5_000_000.0)) == 900.0
    # the whole grid's mean, any row: the same 900 m2
    assert float(pixel_area_m2(UTM33N, 30.0, -30.0, 5_000_000.0, rows=1000)) == 900.0


def test_a_projected_grid_in_feet_is_converted_to_metres():
    # a US survey foot is 1200/3937 m, so 100 ft = 30.480061 m
    assert float(pixel_area_m2(US_FEET, 100.0, -100.0, 0.0)) == pytest.approx((100 * 1200 / 3937) ** 2, rel=1e-12)


@pytest.mark.parametrize("lat_top, hand_m2", [(0.0, 12309.07207883872), (60.0, 6216.899149845364)])
def test_a_thousandth_of_a_degree_on_wgs84(lat_top, hand_m2):
    """A 0.001 x 0.001 degree pixel whose top edge is at ``lat_top`` (rows going south)."""
    assert hand_cell_m2(lat_top - 0.0005) == pytest.approx(hand_m2, rel=1e-12)  # the literal is the formula's
    got = float(pixel_area_m2(WGS84, 0.001, -0.001, lat_top))
    assert got == pytest.approx(hand_m2, rel=1e-9)
    # an independent implementation: Karney's geodesic polygon (edges are geodesics, not parallels: ~1e-6 off)
    geod = CRS.from_wkt(WGS84).get_geod()
    lats = [lat_top, lat_top, lat_top - 0.001, lat_top - 0.001]
    area, _ = geod.polygon_area_perimeter([10.0, 10.001, 10.001, 10.0], lats)
    assert got == pytest.approx(abs(area), rel=1e-5)


def test_a_spherical_shortcut_would_be_off_by_more_than_the_tolerance():
    """Against the authalic sphere (R = 6371007.2 m): ~0.45% apart at the equator, so the tolerance above bites."""
    sphere = 6371007.2**2 * D * D
    assert abs(float(pixel_area_m2(WGS84, 0.001, -0.001, 0.0)) / sphere - 1) > 3e-3


def test_rows_of_a_geographic_grid_shrink_towards_the_pole_and_average_to_the_whole():
    areas = row_pixel_areas_m2(WGS84, (10.0, 0.001, 0.0, 60.001, 0.0, -0.001), 2)
    assert areas[0] == pytest.approx(hand_cell_m2(60.0005), rel=1e-9)
    assert areas[1] == pytest.approx(6216.899149845364, rel=1e-9) and areas[0] < areas[1]
    mean = (hand_cell_m2(60.0005) + 6216.899149845364) / 2
    assert float(pixel_area_m2(WGS84, 0.001, -0.001, 60.001, rows=2)) == pytest.approx(mean, rel=1e-9)


def test_unknown_units_are_nan_never_guessed():
    assert math.isnan(float(pixel_area_m2(None, 30.0, -30.0, 0.0)))
    assert np.isnan(row_pixel_areas_m2(None, (0, 1, 0, 0, 0, -1), 3)).all()


def test_a_rotated_grid_is_refused():
    with pytest.raises(ValueError, match="rotated"):
        row_pixel_areas_m2(UTM33N, (0, 30, 1, 0, 0, -30), 3)


def test_patch_table_areas_per_event_crs():
    table = pd.DataFrame({"event_id": ["utm", "geo", "none"], "x_step": [30.0, 0.001, 1.0],
                          "y_step": [-30.0, -0.001, -1.0], "y_origin": [5e6, 0.0, 0.0]})
    km2 = patch_pixel_area_km2(table, {"utm": UTM33N, "geo": WGS84, "none": ""}, patch_size=1)
    assert km2[0] == pytest.approx(900 / 1e6) and km2[1] == pytest.approx(12309.07207883872 / 1e6, rel=1e-9)
    assert math.isnan(km2[2])

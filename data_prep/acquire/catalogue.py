"""Search the CDSE OData catalogue for Sentinel-1 products over an area and a date window.

The filter is the one documented by the Copernicus Data Space Ecosystem
(collection, ``productType`` attribute, ``OData.CSC.Intersects`` with a
lon/lat WKT polygon, ``ContentDate/Start`` bounds and the optional
``orbitDirection`` / ``relativeOrbitNumber`` attributes); pages are followed
through ``@odata.nextLink``. Each product comes back as a :class:`Product`
with the percentage of the area its footprint covers.

Every request (each search page, each product lookup) is retried on HTTP 5xx,
429, timeouts and dropped connections with the downloads' retry policy
(:class:`data_prep.acquire.transfer.RetryPolicy`, ``transfer.*`` in
``conf/acquire.yaml``), honouring ``Retry-After``; a failing page is retried by
itself, the pages already read are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

from data_prep.acquire.transfer import RetriesExhausted, RetryPolicy, TransientError, retry_after_seconds

log = logging.getLogger(__name__)

ORBIT_DIRECTIONS = ("ASCENDING", "DESCENDING")
VECTOR_SUFFIXES = (".geojson", ".json", ".shp", ".gpkg", ".kml")


class CatalogueError(RuntimeError):
    """The catalogue cannot be searched or answered something unusable; the message says what and where."""


class AoiError(ValueError):
    """The area of interest cannot be read; the message names the value or file and the problem."""


@dataclass(frozen=True)
class Product:
    """One catalogue entry, reduced to what pair selection and download need."""

    id: str
    name: str
    start: datetime
    product_type: str
    orbit_direction: str
    relative_orbit: int
    orbit: int | None
    platform: str
    size_bytes: int
    md5: str | None
    coverage_pct: float
    online: bool = True

    @property
    def date(self) -> date:
        return self.start.date()

    def to_json(self) -> dict:
        return {"name": self.name, "id": self.id, "date": self.date.isoformat(), "start": self.start.isoformat(),
                "relative_orbit": self.relative_orbit, "orbit_direction": self.orbit_direction, "orbit": self.orbit,
                "platform": self.platform, "product_type": self.product_type, "size_bytes": self.size_bytes,
                "md5": self.md5, "coverage_pct": round(self.coverage_pct, 2)}


# --- area of interest -------------------------------------------------------------------------------------------

def load_aoi(value: str):
    """The area as a shapely geometry in EPSG:4326 from a WKT string or a vector file (GeoJSON, Shapefile, ...)."""
    from shapely import wkt
    from shapely.errors import ShapelyError

    text = str(value).strip()
    if not text:
        raise AoiError("aoi: empty (give a WKT polygon in lon lat order or a GeoJSON/Shapefile path)")
    if Path(text).suffix.lower() in VECTOR_SUFFIXES or Path(text).exists():
        geometry = _read_vector_aoi(Path(text))
    else:
        try:
            geometry = wkt.loads(text)
        except (ShapelyError, ValueError) as exc:
            raise AoiError(f"aoi: {text[:80]!r} is neither an existing vector file nor valid WKT ({exc})") from None
    if geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise AoiError(f"aoi: need a polygon area, got {geometry.geom_type}{' (empty)' if geometry.is_empty else ''}")
    if not geometry.is_valid:
        raise AoiError(f"aoi: the polygon is not valid (self-intersecting?): {text[:80]!r}")
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AoiError(f"aoi: coordinates outside lon [-180, 180] / lat [-90, 90] (bounds {geometry.bounds}); "
                       "WKT must be in lon lat order, EPSG:4326")
    return geometry


def _read_vector_aoi(path: Path):
    import geopandas as gpd

    if not path.is_file():
        raise AoiError(f"aoi: file {path} does not exist")
    try:
        frame = gpd.read_file(path)
    except Exception as exc:
        raise AoiError(f"aoi: {path}: unreadable vector file ({type(exc).__name__}: {exc})") from None
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise AoiError(f"aoi: {path}: no geometry in the file")
    if frame.crs is None:
        if path.suffix.lower() not in (".geojson", ".json", ".kml"):
            raise AoiError(f"aoi: {path}: no CRS (for a Shapefile: the .prj sidecar is missing)")
        frame = frame.set_crs(4326)
    return frame.to_crs(4326).geometry.union_all()


def aoi_query_wkt(aoi) -> str:
    """The polygon for ``OData.CSC.Intersects``: lon lat order, closed ring, no holes (a superset for multi-parts)."""
    polygon = aoi if aoi.geom_type == "Polygon" else aoi.convex_hull
    ring = list(polygon.exterior.coords)
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return "POLYGON((" + ", ".join(f"{lon:.6f} {lat:.6f}" for lon, lat, *_ in ring) + "))"


# --- filter -----------------------------------------------------------------------------------------------------

def _odata_time(day: date) -> str:
    return f"{day.isoformat()}T00:00:00.000Z"


def _attribute(kind: str, name: str, value: Any) -> str:
    literal = f"'{value}'" if kind == "StringAttribute" else str(int(value))
    return (f"Attributes/OData.CSC.{kind}/any(att:att/Name eq '{name}' and "
            f"att/OData.CSC.{kind}/Value eq {literal})")


def build_filter(aoi, first_day: date, last_day: date, *, collection: str = "SENTINEL-1",
                 product_type: str | None = "IW_SLC__1S", orbit_direction: str | None = None,
                 relative_orbit: int | None = None) -> str:
    """The OData ``$filter`` for products whose start lies in [first_day, last_day] (whole days) over the area."""
    if last_day < first_day:
        raise ValueError(f"date window ends ({last_day}) before it starts ({first_day})")
    clauses = [f"Collection/Name eq '{collection}'"]
    if product_type:
        clauses.append(_attribute("StringAttribute", "productType", product_type))
    if orbit_direction:
        direction = str(orbit_direction).upper()
        if direction not in ORBIT_DIRECTIONS:
            raise ValueError(f"orbit_direction: {orbit_direction!r} is not one of {ORBIT_DIRECTIONS}")
        clauses.append(_attribute("StringAttribute", "orbitDirection", direction))
    if relative_orbit is not None:
        if not 1 <= int(relative_orbit) <= 175:
            raise ValueError(f"relative_orbit: {relative_orbit} outside 1..175 (Sentinel-1 has 175 orbits per cycle)")
        clauses.append(_attribute("IntegerAttribute", "relativeOrbitNumber", relative_orbit))
    clauses.append(f"OData.CSC.Intersects(area=geography'SRID=4326;{aoi_query_wkt(aoi)}')")
    clauses.append(f"ContentDate/Start gt {_odata_time(first_day)} and "
                   f"ContentDate/Start lt {_odata_time(last_day + timedelta(days=1))}")
    return " and ".join(clauses)


# --- response parsing -------------------------------------------------------------------------------------------

def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def footprint_geometry(item: dict):
    """The product footprint from ``GeoFootprint`` (GeoJSON) or else ``Footprint`` (``geography'SRID=4326;...'``)."""
    from shapely import wkt
    from shapely.geometry import shape

    if item.get("GeoFootprint"):
        return shape(item["GeoFootprint"])
    text = str(item.get("Footprint") or "")
    if ";" in text:
        return wkt.loads(text.split(";", 1)[1].rstrip("'"))
    return None


def md5_of(item: dict) -> str | None:
    for checksum in item.get("Checksum") or []:
        if str(checksum.get("Algorithm", "")).upper() == "MD5" and checksum.get("Value"):
            return str(checksum["Value"]).lower()
    return None


def parse_product(item: dict, aoi=None) -> Product:
    """One ``value`` entry (with ``$expand=Attributes``) as a :class:`Product`; coverage of ``aoi`` in percent."""
    name = item.get("Name", "<no Name>")
    attributes = {a.get("Name"): a.get("Value") for a in item.get("Attributes") or []}
    missing = [k for k in ("productType", "orbitDirection", "relativeOrbitNumber") if attributes.get(k) in (None, "")]
    if missing or not item.get("Id") or not item.get("ContentDate", {}).get("Start"):
        missing += [k for k in ("Id",) if not item.get("Id")] + (
            ["ContentDate/Start"] if not item.get("ContentDate", {}).get("Start") else [])
        raise CatalogueError(f"catalogue product {name}: missing {', '.join(missing)} (was the search made with "
                             "$expand=Attributes?)")
    coverage = 0.0
    if aoi is not None:
        footprint = footprint_geometry(item)
        if footprint is not None and aoi.area > 0:
            coverage = 100.0 * footprint.intersection(aoi).area / aoi.area
    orbit = attributes.get("orbitNumber")
    return Product(
        id=str(item["Id"]), name=str(name), start=_parse_time(item["ContentDate"]["Start"]),
        product_type=str(attributes["productType"]), orbit_direction=str(attributes["orbitDirection"]).upper(),
        relative_orbit=int(attributes["relativeOrbitNumber"]), orbit=int(orbit) if orbit is not None else None,
        platform=str(name)[:3], size_bytes=int(item.get("ContentLength") or 0), md5=md5_of(item),
        coverage_pct=min(coverage, 100.0), online=bool(item.get("Online", True)),
    )


# --- requests ---------------------------------------------------------------------------------------------------

class TransientCatalogueError(TransientError):
    """A catalogue answer worth asking again for (5xx, 429, timeout, dropped connection)."""


def _get_json_once(session: requests.Session, url: str, params: dict | None, timeout_s: float) -> dict:
    try:
        response = session.get(url, params=params, timeout=timeout_s)
        text = response.text  # read the whole body here: a connection dropped midway is transient too
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransientCatalogueError(f"catalogue {url}: request failed ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise CatalogueError(f"catalogue {url}: request failed ({type(exc).__name__}: {exc})") from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientCatalogueError(f"catalogue {response.url}: HTTP {status}", retry_after_seconds(response))
    if status != 200:
        raise CatalogueError(f"catalogue {response.url}: HTTP {status}: {text[:300]}")
    try:
        return response.json()
    except ValueError:
        raise CatalogueError(f"catalogue {response.url}: answer is not JSON: {text[:200]!r}") from None


def _get_json(session: requests.Session, url: str, params: dict | None, timeout_s: float,
              retry: RetryPolicy | None = None) -> dict:
    """One catalogue GET as JSON, retried under ``retry`` (default :class:`RetryPolicy`); CatalogueError on failure."""
    policy = retry if retry is not None else RetryPolicy()
    try:
        return policy.call("", lambda: _get_json_once(session, url, params, timeout_s), (TransientCatalogueError,))
    except RetriesExhausted as exc:
        raise CatalogueError(str(exc)) from None


def iter_pages(session: requests.Session, odata_url: str, odata_filter: str, *, page_size: int = 100,
               timeout_s: float = 60.0, max_pages: int = 1000, retry: RetryPolicy | None = None) -> Iterator[dict]:
    """Every product entry of the search, following ``@odata.nextLink`` until the last page."""
    url = f"{odata_url.rstrip('/')}/Products"
    params: dict | None = {"$filter": odata_filter, "$orderby": "ContentDate/Start asc", "$top": str(page_size),
                           "$expand": "Attributes", "$count": "True"}
    seen: set[str] = set()
    for page in range(max_pages):
        body = _get_json(session, url, params, timeout_s, retry)
        if "value" not in body or not isinstance(body["value"], list):
            raise CatalogueError(f"catalogue {url}: answer has no 'value' list (keys: {sorted(body)})")
        if page == 0 and "@odata.count" in body:
            log.info("catalogue: %s product(s) match", body["@odata.count"])
        yield from body["value"]
        next_link = body.get("@odata.nextLink")
        if not next_link:
            return
        if next_link in seen:
            raise CatalogueError(f"catalogue {url}: @odata.nextLink repeats ({next_link}); stopping")
        seen.add(next_link)
        url, params = next_link, None
    raise CatalogueError(f"catalogue: more than {max_pages} pages; narrow the search (date window, orbit filters)")


def search_products(session: requests.Session, odata_url: str, aoi, first_day: date, last_day: date, *,
                    collection: str = "SENTINEL-1", product_type: str | None = "IW_SLC__1S",
                    orbit_direction: str | None = None, relative_orbit: int | None = None,
                    page_size: int = 100, timeout_s: float = 60.0, retry: RetryPolicy | None = None) -> list[Product]:
    """Products over ``aoi`` acquired in [first_day, last_day], oldest first, each with its coverage of the area."""
    odata_filter = build_filter(aoi, first_day, last_day, collection=collection, product_type=product_type,
                                orbit_direction=orbit_direction, relative_orbit=relative_orbit)
    log.debug("catalogue filter: %s", odata_filter)
    products = [parse_product(item, aoi) for item in
                iter_pages(session, odata_url, odata_filter, page_size=page_size, timeout_s=timeout_s, retry=retry)]
    return sorted(products, key=lambda p: (p.start, p.name))


def product_types_present(session: requests.Session, odata_url: str, aoi, first_day: date, last_day: date, *,
                          collection: str = "SENTINEL-1", page_size: int = 100, timeout_s: float = 60.0,
                          retry: RetryPolicy | None = None) -> list[str]:
    """The product types of every product over the area in the window (to explain an empty SLC search)."""
    odata_filter = build_filter(aoi, first_day, last_day, collection=collection, product_type=None)
    types = set()
    for item in iter_pages(session, odata_url, odata_filter, page_size=page_size, timeout_s=timeout_s, retry=retry):
        for attribute in item.get("Attributes") or []:
            if attribute.get("Name") == "productType":
                types.add(str(attribute.get("Value")))
    return sorted(types)


def product_by_id(session: requests.Session, odata_url: str, product_id: str, timeout_s: float = 60.0,
                  retry: RetryPolicy | None = None) -> Product:
    """One product's catalogue entry (for a ``pair.json`` that lacks the checksum or size)."""
    url = f"{odata_url.rstrip('/')}/Products({product_id})"
    return parse_product(_get_json(session, url, {"$expand": "Attributes"}, timeout_s, retry))


def format_table(products: list[Product]) -> str:
    """The candidates as a fixed-width text table (one line per product)."""
    header = f"{'name':<68} {'date':<10} {'orbit':>6} {'direction':<10} {'rel.orbit':>9} {'size GB':>8} {'cover %':>8}"
    lines = [header, "-" * len(header)]
    for p in products:
        lines.append(f"{p.name:<68} {p.date.isoformat():<10} {p.orbit if p.orbit is not None else '-':>6} "
                     f"{p.orbit_direction:<10} {p.relative_orbit:>9} {p.size_bytes / 1e9:>8.2f} {p.coverage_pct:>8.1f}")
    if not products:
        lines.append("(no product)")
    return "\n".join(lines)


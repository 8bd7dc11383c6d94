"""A local stand-in for the Copernicus Data Space Ecosystem, for the acquisition tests (127.0.0.1 only).

It speaks the shapes of the CDSE facts: ``/odata/v1/Products`` evaluates the
documented ``$filter`` clauses (and refuses any other clause, so a malformed
filter fails the test), pages with ``$top``/``$skip`` and
``@odata.nextLink``; ``/auth/token`` issues and refreshes bearer tokens;
``/download/odata/v1/Products(<Id>)/$value`` serves zipped SAFE products with
``Range`` support and scripted faults (a connection dropped midway, one
corrupted byte, HTTP 503). Catalogue requests (search pages and product
lookups) take scripted faults too (``catalogue_faults``: HTTP 503, HTTP 429 with
a ``Retry-After``, a connection reset midway). Every request is recorded, with
its arrival time, for the assertions.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from pytest_httpserver import HTTPServer
from shapely import wkt
from shapely.geometry import box, mapping
from werkzeug import Request, Response

PASSWORD = "s3cr3t-Pa55word!"  # distinctive, so a leak is found by a plain substring search
USERNAME = "tester@example.org"


def safe_zip(safe_name: str, payload_bytes: int, seed: int) -> bytes:
    """A small stored zip laid out like a SAFE product (manifest and one measurement file)."""
    import numpy as np

    buffer = io.BytesIO()
    noise = np.random.default_rng(seed).integers(0, 256, payload_bytes, dtype=np.uint8).tobytes()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{safe_name}/manifest.safe", f"<xfdu>{safe_name}</xfdu>")
        archive.writestr(f"{safe_name}/measurement/s1-iw2-slc-vv.tiff", noise)
    return buffer.getvalue()


@dataclass
class FakeProduct:
    name: str
    start: datetime
    relative_orbit: int
    direction: str
    footprint: object  # shapely polygon, lon/lat
    product_type: str = "IW_SLC__1S"
    payload: bytes = b""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def odata(self, expand: bool) -> dict:
        item = {
            "@odata.mediaContentType": "application/octet-stream", "Id": self.id, "Name": self.name,
            "ContentType": "application/octet-stream", "ContentLength": len(self.payload),
            "OriginDate": self.start.isoformat().replace("+00:00", "Z"),
            "ContentDate": {"Start": self.start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                            "End": (self.start + timedelta(seconds=27)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
            "Online": True, "S3Path": f"/eodata/Sentinel-1/SAR/{self.product_type}/{self.name}",
            "Checksum": [{"Algorithm": "MD5", "Value": hashlib.md5(self.payload).hexdigest()},
                         {"Algorithm": "BLAKE3", "Value": "0" * 64}],
            "Footprint": f"geography'SRID=4326;{self.footprint.wkt}'",
            "GeoFootprint": mapping(self.footprint),
        }
        if expand:
            item["Attributes"] = [
                {"@odata.type": "#OData.CSC.StringAttribute", "Name": "productType", "Value": self.product_type,
                 "ValueType": "String"},
                {"@odata.type": "#OData.CSC.StringAttribute", "Name": "orbitDirection", "Value": self.direction,
                 "ValueType": "String"},
                {"@odata.type": "#OData.CSC.IntegerAttribute", "Name": "relativeOrbitNumber",
                 "Value": self.relative_orbit, "ValueType": "Integer"},
                {"@odata.type": "#OData.CSC.IntegerAttribute", "Name": "orbitNumber", "Value": 12612,
                 "ValueType": "Integer"},
            ]
        return item


def product_name(platform: str, start: datetime, product_type: str = "IW_SLC__1S") -> str:
    stamp, stop = start.strftime("%Y%m%dT%H%M%S"), (start + timedelta(seconds=27)).strftime("%Y%m%dT%H%M%S")
    kind = {"IW_SLC__1S": "IW_SLC__1SDV", "IW_GRDH_1S": "IW_GRDH_1SDV"}[product_type]
    return f"{platform}_{kind}_{stamp}_{stop}_012612_0173E4_{start.strftime('%H%M')}.SAFE"


ATTRIBUTE = re.compile(r"Attributes/OData\.CSC\.(String|Integer)Attribute/any\(att:att/Name eq '(\w+)' and "
                       r"att/OData\.CSC\.(?:String|Integer)Attribute/Value eq '?([\w]+)'?\)")
INTERSECTS = re.compile(r"OData\.CSC\.Intersects\(area=geography'SRID=4326;(POLYGON\(\([-\d., ]+\)\))'\)")
DATES = re.compile(r"ContentDate/Start gt (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) and "
                   r"ContentDate/Start lt (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")
COLLECTION = re.compile(r"Collection/Name eq '([\w-]+)'")


def _when(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


class FakeCdse:
    """Catalogue, token service and download service on one local port."""

    max_page = 3  # smaller than any $top the client sends, so every search spans several pages

    def __init__(self, products: list[FakeProduct]):
        self.products = products
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.faults: dict[str, list[str]] = {}  # product id -> faults consumed one GET at a time
        # consumed one catalogue GET (search page or product lookup) at a time: "ok", "503", "429:<Retry-After>",
        # "reset" (the answer is cut midway and the connection dropped)
        self.catalogue_faults: list[str] = []
        self.valid_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.token_grants: list[str] = []
        self.active_downloads = 0
        self.max_active_downloads = 0
        self.download_delay_s = 0.0

    # --- lifecycle
    def start(self) -> FakeCdse:
        self.server.start()
        self.server.expect_request(re.compile(r"^/odata/v1/Products$")).respond_with_handler(self._search)
        self.server.expect_request(re.compile(r"^/odata/v1/Products\(.+\)$")).respond_with_handler(self._one)
        self.server.expect_request("/auth/token", method="POST").respond_with_handler(self._token)
        self.server.expect_request(re.compile(r"^/download/odata/v1/Products\(.+\)/\$value$")).respond_with_handler(
            self._download)
        return self

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def overrides(self) -> dict:
        return {"odata_url": f"{self.base}/odata/v1", "token_url": f"{self.base}/auth/token",
                "download_url": f"{self.base}/download/odata/v1"}

    def revoke_tokens(self) -> None:
        self.valid_tokens.clear()

    def downloads(self) -> list[dict]:
        return [r for r in self.requests if r["kind"] == "download"]

    # --- catalogue
    def _catalogue_fault(self, record: dict) -> Response | None:
        with self.lock:
            fault = self.catalogue_faults.pop(0) if self.catalogue_faults else "ok"
        record["fault"] = fault
        if fault == "503":
            return Response("Service Unavailable", status=503)
        if fault.startswith("429:"):
            return Response('{"detail": "Too Many Requests"}', status=429,
                            headers={"Retry-After": fault.split(":", 1)[1]}, content_type="application/json")
        if fault == "reset":
            head = b'{"value": [{"Id": "'

            def cut():
                yield head
                raise ConnectionResetError("fake CDSE resets the connection midway")

            return Response(cut(), status=200, headers={"Content-Length": "4096"}, direct_passthrough=True,
                            content_type="application/json")
        if fault != "ok":
            raise ValueError(f"unknown catalogue fault {fault!r}")
        return None

    def _matches(self, product: FakeProduct, odata_filter: str) -> bool:
        rest = odata_filter
        for pattern in (ATTRIBUTE, INTERSECTS, DATES, COLLECTION):
            rest = pattern.sub("", rest)
        if rest.replace("and", "").strip():
            raise ValueError(f"unsupported filter clause(s): {rest!r}")
        collection = COLLECTION.search(odata_filter)
        if collection is None or collection.group(1) != "SENTINEL-1":
            return False
        for _, name, value in ATTRIBUTE.findall(odata_filter):
            actual = {"productType": product.product_type, "orbitDirection": product.direction,
                      "relativeOrbitNumber": str(product.relative_orbit)}[name]
            if actual != value:
                return False
        area = INTERSECTS.search(odata_filter)
        if area is None or not wkt.loads(area.group(1)).intersects(product.footprint):
            return False
        dates = DATES.search(odata_filter)
        if dates is None:
            return False
        return _when(dates.group(1)) < product.start < _when(dates.group(2))

    def _search(self, request: Request) -> Response:
        import json

        args = request.args
        record = {"kind": "search", "args": dict(args), "at": time.monotonic()}
        self.requests.append(record)
        faulty = self._catalogue_fault(record)
        if faulty is not None:
            return faulty
        try:
            matching = [p for p in self.products if self._matches(p, args.get("$filter", ""))]
        except ValueError as exc:
            return Response(json.dumps({"detail": str(exc)}), status=400, content_type="application/json")
        if args.get("$orderby") != "ContentDate/Start asc":
            return Response('{"detail": "expected $orderby=ContentDate/Start asc"}', status=400)
        matching.sort(key=lambda p: p.start)
        top, skip = min(int(args.get("$top", 20)), self.max_page), int(args.get("$skip", 0))
        page = matching[skip:skip + top]
        body = {"@odata.context": "$metadata#Products(Attributes())",
                "value": [p.odata(args.get("$expand") == "Attributes") for p in page]}
        if args.get("$count") == "True":
            body["@odata.count"] = len(matching)
        if skip + top < len(matching):
            query = {k: v for k, v in args.items() if k != "$count"} | {"$skip": str(skip + top)}
            body["@odata.nextLink"] = f"{self.base}/odata/v1/Products?{urlencode(query)}"
        return Response(json.dumps(body), content_type="application/json")

    def _one(self, request: Request) -> Response:
        import json

        wanted = request.path.split("(", 1)[1].rstrip(")")
        record = {"kind": "product", "id": wanted, "at": time.monotonic()}
        self.requests.append(record)
        faulty = self._catalogue_fault(record)
        if faulty is not None:
            return faulty
        for product in self.products:
            if product.id == wanted:
                return Response(json.dumps(product.odata(request.args.get("$expand") == "Attributes")),
                                content_type="application/json")
        return Response('{"detail": "not found"}', status=404)

    # --- tokens
    def _token(self, request: Request) -> Response:
        import json

        form = request.form
        grant = form.get("grant_type")
        with self.lock:
            self.token_grants.append(grant)
        if form.get("client_id") != "cdse-public":
            return Response('{"error": "invalid_client"}', status=401)
        if grant == "password":
            if form.get("username") != USERNAME or form.get("password") != PASSWORD:
                return Response('{"error": "invalid_grant"}', status=401)
        elif grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return Response('{"error": "invalid_grant"}', status=400)
        else:
            return Response('{"error": "unsupported_grant_type"}', status=400)
        access, refresh = f"tok-{uuid.uuid4().hex}", f"ref-{uuid.uuid4().hex}"
        with self.lock:
            self.valid_tokens.add(access)
            self.refresh_tokens.add(refresh)
        return Response(json.dumps({"access_token": access, "refresh_token": refresh, "expires_in": 600}),
                        content_type="application/json")

    # --- downloads
    def _download(self, request: Request) -> Response:
        wanted = request.path.split("(", 1)[1].split(")", 1)[0]
        product = next((p for p in self.products if p.id == wanted), None)
        auth = request.headers.get("Authorization", "")
        record = {"kind": "download", "id": wanted, "range": request.headers.get("Range"), "sent": 0}
        with self.lock:
            self.requests.append(record)
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.valid_tokens:
            record["status"] = 401
            return Response('{"detail": "Expired signature"}', status=401)
        if product is None:
            record["status"] = 404
            return Response('{"detail": "not found"}', status=404)
        with self.lock:
            fault = self.faults.get(wanted, []).pop(0) if self.faults.get(wanted) else None
        if fault == "503":
            record["status"] = 503
            return Response("Service Unavailable", status=503)
        data = product.payload
        if fault == "corrupt":
            flipped = bytearray(data)
            flipped[len(data) // 2] ^= 0xFF
            data = bytes(flipped)
        start, status, headers = 0, 200, {}
        match = re.fullmatch(r"bytes=(\d+)-", record["range"] or "")
        if match:
            start = int(match.group(1))
            if start >= len(data):
                record["status"] = 416
                return Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status, headers = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        record["status"] = status

        def stream():
            with self.lock:
                self.active_downloads += 1
                self.max_active_downloads = max(self.max_active_downloads, self.active_downloads)
            try:
                if self.download_delay_s:
                    threading.Event().wait(self.download_delay_s)
                cut = len(body) * 2 // 5 if fault == "drop" else len(body)
                for offset in range(0, cut, 16384):
                    piece = body[offset:min(offset + 16384, cut)]
                    record["sent"] += len(piece)
                    yield piece
                if fault == "drop":
                    raise ConnectionResetError("fake CDSE drops the connection midway")
            finally:
                with self.lock:
                    self.active_downloads -= 1

        return Response(stream(), status=status, headers=headers, direct_passthrough=True,
                        content_type="application/zip")


def iburi_catalogue() -> tuple[list[FakeProduct], object]:
    """The hand-made catalogue around Iburi 2018 (event 2018-09-06) and its area of interest.

    orbit 46 DESCENDING covers the area fully on 08-24, 09-05, 09-17, 09-29 -> pair 09-05 / 09-17 (12 days);
    orbit 68 ASCENDING covers it on 08-29, 09-10, 09-16, and only 60 % on 09-04 -> pair 08-29 / 09-10 (12 days,
    ranked after orbit 46 because its pre-event image is 8 days before the event, not 1);
    orbit 119 ASCENDING covers 40 % of it -> no pair; one GRD product on orbit 46 is never an SLC candidate.
    """
    aoi = box(142.0, 42.7, 142.1, 42.8)
    full = box(141.0, 42.0, 143.5, 43.6)
    sixty = box(142.04, 41.0, 144.0, 44.0)  # covers lon 142.04 .. 142.1 of the area: 60 %
    forty = box(142.06, 41.0, 144.0, 44.0)  # 40 %
    utc = timezone.utc
    specs = [
        ("S1B", datetime(2018, 8, 24, 20, 42, 26, tzinfo=utc), 46, "DESCENDING", full, "IW_SLC__1S"),
        ("S1A", datetime(2018, 8, 29, 8, 32, 10, tzinfo=utc), 68, "ASCENDING", full, "IW_SLC__1S"),
        ("S1A", datetime(2018, 9, 1, 8, 40, 0, tzinfo=utc), 119, "ASCENDING", forty, "IW_SLC__1S"),
        ("S1B", datetime(2018, 9, 4, 8, 32, 10, tzinfo=utc), 68, "ASCENDING", sixty, "IW_SLC__1S"),
        ("S1B", datetime(2018, 9, 5, 20, 42, 26, tzinfo=utc), 46, "DESCENDING", full, "IW_SLC__1S"),
        ("S1A", datetime(2018, 9, 10, 8, 32, 10, tzinfo=utc), 68, "ASCENDING", full, "IW_SLC__1S"),
        ("S1A", datetime(2018, 9, 13, 8, 40, 0, tzinfo=utc), 119, "ASCENDING", forty, "IW_SLC__1S"),
        ("S1B", datetime(2018, 9, 16, 8, 32, 10, tzinfo=utc), 68, "ASCENDING", full, "IW_SLC__1S"),
        ("S1B", datetime(2018, 9, 17, 20, 42, 26, tzinfo=utc), 46, "DESCENDING", full, "IW_SLC__1S"),
        ("S1B", datetime(2018, 9, 17, 20, 42, 30, tzinfo=utc), 46, "DESCENDING", full, "IW_GRDH_1S"),
        ("S1B", datetime(2018, 9, 29, 20, 42, 26, tzinfo=utc), 46, "DESCENDING", full, "IW_SLC__1S"),
        # far away, GRD only: the 'only GRD' case (area lon 10..10.1, lat 45..45.1, June 2020)
        ("S1A", datetime(2020, 6, 3, 5, 20, 0, tzinfo=utc), 15, "ASCENDING", box(9.0, 44.0, 11.0, 46.0), "IW_GRDH_1S"),
    ]
    products = []
    for seed, (platform, start, orbit, direction, footprint, kind) in enumerate(specs):
        name = product_name(platform, start, kind)
        products.append(FakeProduct(name, start, orbit, direction, footprint, kind,
                                    payload=safe_zip(name, 200_000 + 1000 * seed, seed)))
    return products, aoi

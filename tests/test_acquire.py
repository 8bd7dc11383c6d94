"""Sentinel-1 acquisition against a local fake CDSE (no internet): search, pair, download, unpack, secrets."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import zipfile
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from conftest import worktree_env
from fake_cdse import PASSWORD, USERNAME, FakeCdse, iburi_catalogue, safe_zip
from shapely.geometry import box

from data_prep.acquire.auth import (
    Credentials,
    CredentialsError,
    RedactingFilter,
    TokenSource,
    find_credentials,
)
from data_prep.acquire.catalogue import (
    AoiError,
    CatalogueError,
    Product,
    build_filter,
    load_aoi,
    product_by_id,
    search_products,
)
from data_prep.acquire.orbits import (
    fetch_orbits,
    install_orbit_file,
    snap_orbit_folders,
)
from data_prep.acquire.pairs import NoPairError, rank_orbits, select_pair
from data_prep.acquire.safe import SafeArchiveError, check_safe_zip, extract_safe
from data_prep.acquire.transfer import (
    DiskSpaceError,
    DownloadError,
    ProductFile,
    RetryPolicy,
    TransferSettings,
    download_products,
)

EVENT = date(2018, 9, 6)


@pytest.fixture
def cdse():
    products, aoi = iburi_catalogue()
    server = FakeCdse(products).start()
    server.aoi = aoi
    yield server
    server.stop()


def by_date(server: FakeCdse, day: str, kind: str = "IW_SLC__1S"):
    return next(p for p in server.products if p.start.date().isoformat() == day and p.product_type == kind)


def product_file(fake) -> ProductFile:
    return ProductFile(fake.id, fake.name, len(fake.payload), hashlib.md5(fake.payload).hexdigest())


def settings(server: FakeCdse, **overrides) -> TransferSettings:
    values = dict(download_url=server.overrides()["download_url"], parallel=2, max_attempts=4, backoff_s=0.0,
                  backoff_max_s=0.0, timeout_s=10, chunk_mb=0.0625, free_space_margin_gb=0.0)
    return TransferSettings(**(values | overrides))


def tokens_for(server: FakeCdse) -> TokenSource:
    return TokenSource(Credentials(USERNAME, PASSWORD, "test"), server.overrides()["token_url"])


# --- search ---------------------------------------------------------------------------------------------------

def test_filter_is_the_documented_odata_expression():
    text = build_filter(box(10, 45, 11, 46), date(2021, 1, 1), date(2021, 1, 31), orbit_direction="descending",
                        relative_orbit=117)
    assert text == (
        "Collection/Name eq 'SENTINEL-1' and "
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and "
        "att/OData.CSC.StringAttribute/Value eq 'IW_SLC__1S') and "
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'orbitDirection' and "
        "att/OData.CSC.StringAttribute/Value eq 'DESCENDING') and "
        "Attributes/OData.CSC.IntegerAttribute/any(att:att/Name eq 'relativeOrbitNumber' and "
        "att/OData.CSC.IntegerAttribute/Value eq 117) and "
        "OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((11.000000 45.000000, 11.000000 46.000000, "
        "10.000000 46.000000, 10.000000 45.000000, 11.000000 45.000000))') and "
        "ContentDate/Start gt 2021-01-01T00:00:00.000Z and ContentDate/Start lt 2021-02-01T00:00:00.000Z")
    with pytest.raises(ValueError, match="orbit_direction"):
        build_filter(box(10, 45, 11, 46), date(2021, 1, 1), date(2021, 1, 2), orbit_direction="up")


def test_search_pages_through_next_links_and_measures_coverage(cdse):
    import requests

    products = search_products(requests.Session(), cdse.overrides()["odata_url"], cdse.aoi, date(2018, 8, 13),
                               date(2018, 9, 30), page_size=100)
    searches = [r for r in cdse.requests if r["kind"] == "search"]
    assert len(products) == 10 and len(searches) == 4  # 10 SLCs over the area, 3 per page
    assert all(p.product_type == "IW_SLC__1S" for p in products)
    assert [p.date.isoformat() for p in products][:3] == ["2018-08-24", "2018-08-29", "2018-09-01"]
    coverage = {(p.relative_orbit, p.date.isoformat()): p.coverage_pct for p in products}
    assert coverage[(46, "2018-09-05")] == pytest.approx(100.0)
    assert coverage[(68, "2018-09-04")] == pytest.approx(60.0)
    assert coverage[(119, "2018-09-01")] == pytest.approx(40.0)
    only_46 = search_products(requests.Session(), cdse.overrides()["odata_url"], cdse.aoi, date(2018, 8, 13),
                              date(2018, 9, 30), orbit_direction="DESCENDING", relative_orbit=46)
    assert [p.date.isoformat() for p in only_46] == ["2018-08-24", "2018-09-05", "2018-09-17", "2018-09-29"]


NO_WAIT = RetryPolicy(max_attempts=4, backoff_s=0.0, backoff_max_s=0.0, max_total_s=60.0)


def _search(server: FakeCdse, retry: RetryPolicy = NO_WAIT) -> list[Product]:
    import requests

    return search_products(requests.Session(), server.overrides()["odata_url"], server.aoi, date(2018, 8, 13),
                           date(2018, 9, 30), page_size=100, retry=retry)


def _skips(server: FakeCdse) -> list[str]:
    return [r["args"].get("$skip", "0") for r in server.requests if r["kind"] == "search"]


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_a_failing_catalogue_page_is_retried_alone(cdse, fault):
    cdse.catalogue_faults = ["ok", fault]  # page 2 fails once
    products = _search(cdse)
    assert [p.date.isoformat() for p in products][:3] == ["2018-08-24", "2018-08-29", "2018-09-01"]
    assert len(products) == 10
    # 10 products, 3 per page: skips 0, 3, 6, 9; page 2 asked twice, page 1 kept (never asked again)
    assert _skips(cdse) == ["0", "3", "3", "6", "9"]
    assert [r["fault"] for r in cdse.requests] == ["ok", fault, "ok", "ok", "ok"]


def test_catalogue_429_waits_for_retry_after(cdse):
    cdse.catalogue_faults = ["429:1"]
    assert len(_search(cdse)) == 10
    first, second = [r["at"] for r in cdse.requests[:2]]
    assert second - first >= 1.0  # backoff is 0 here: the 1 s came from Retry-After
    # A Retry-After beyond the time bound gives up at once, saying why, instead of sleeping an hour.
    cdse.requests.clear()
    cdse.catalogue_faults = ["429:3600"]
    with pytest.raises(CatalogueError, match=r"HTTP 429 \(gave up after 1 attempt in \d+ s; the server asked to "
                                             r"wait 3600 s more; rerun later\)"):
        _search(cdse)
    assert len(cdse.requests) == 1


def test_catalogue_gives_up_after_the_attempt_bound_with_one_line(cdse):
    import requests

    cdse.catalogue_faults = ["503"] * 10
    with pytest.raises(CatalogueError) as caught:
        _search(cdse, RetryPolicy(max_attempts=3, backoff_s=0.0, backoff_max_s=0.0, max_total_s=60.0))
    message = str(caught.value)
    assert "\n" not in message and "HTTP 503" in message
    assert "gave up after 3 attempts" in message and "limits: 3 attempts, 60 s" in message
    assert len(cdse.requests) == 3
    # product lookups are retried the same way
    cdse.catalogue_faults = ["503", "reset"]
    fake = by_date(cdse, "2018-09-05")
    assert product_by_id(requests.Session(), cdse.overrides()["odata_url"], fake.id, retry=NO_WAIT).name == fake.name
    assert [r["fault"] for r in cdse.requests if r["kind"] == "product"] == ["503", "reset", "ok"]


def test_catalogue_retry_is_bounded_in_time(cdse):
    # backoff 2 s, 4 s, ...: with 3 s in all, the second wait (4 s) would overrun, so it stops after 2 tries.
    cdse.catalogue_faults = ["503"] * 10
    policy = RetryPolicy(max_attempts=50, backoff_s=2.0, backoff_max_s=100.0, max_total_s=3.0)
    with pytest.raises(CatalogueError, match=r"gave up after 2 attempts .*limits: 50 attempts, 3 s"):
        _search(cdse, policy)
    assert len(cdse.requests) == 2
    assert cdse.requests[1]["at"] - cdse.requests[0]["at"] >= 2.0


def test_cli_catalogue_and_downloads_share_one_retry_policy(cdse, tmp_path, monkeypatch, caplog):
    from data_prep.acquire import cli

    seen = []
    real = cli.search_products

    def spy(*args, retry=None, **kwargs):
        seen.append(retry)
        return real(*args, retry=retry, **kwargs)

    monkeypatch.setattr(cli, "search_products", spy)
    real_download = cli.download_products
    monkeypatch.setattr(cli, "download_products", lambda *a, **k: seen.append(a[3].retry) or real_download(*a, **k))
    monkeypatch.setenv("CDSE_USERNAME", USERNAME)
    monkeypatch.setenv("CDSE_PASSWORD", PASSWORD)
    aoi = AOI_OVERRIDE.replace("'", '"')
    assert cli.run(_compose(cdse, "event=iburi_2018", aoi, f"out_dir={tmp_path}", "transfer.max_attempts=5",
                            "transfer.max_total_s=77")) == 0
    assert len(seen) == 2 and seen[0] is seen[1]
    assert (seen[0].max_attempts, seen[0].max_total_s) == (5, 77)
    cdse.catalogue_faults = ["503"] * 3
    assert cli.run(_compose(cdse, "event=iburi_2018", aoi, f"out_dir={tmp_path}", "transfer.max_attempts=2",
                            "download=false")) == cli.EXIT_FAILED
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "HTTP 503 (gave up after 2 attempts" in line and "\n" not in line


def test_aoi_from_wkt_geojson_and_errors(tmp_path):
    geojson = tmp_path / "area.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                       "geometry": {"type": "Polygon", "coordinates": [[[142, 42.7], [142.1, 42.7], [142.1, 42.8],
                                                                       [142, 42.8], [142, 42.7]]]}}]}))
    assert load_aoi(str(geojson)).bounds == pytest.approx((142.0, 42.7, 142.1, 42.8))
    assert load_aoi("POLYGON((142 42.7, 142.1 42.7, 142.1 42.8, 142 42.7))").area > 0
    with pytest.raises(AoiError, match="neither an existing vector file nor valid WKT"):
        load_aoi("POLYGON((142 42.7, 142.1")
    with pytest.raises(AoiError, match="lon lat order"):
        load_aoi("POLYGON((42.7 142, 42.8 142, 42.8 142.1, 42.7 142))")
    with pytest.raises(AoiError, match="does not exist"):
        load_aoi(str(tmp_path / "missing.shp"))


# --- pair selection -------------------------------------------------------------------------------------------

def slc(day: str, orbit: int, coverage: float = 100.0, direction: str = "DESCENDING", kind: str = "IW_SLC__1S"):
    start = datetime.fromisoformat(day).replace(hour=20, tzinfo=timezone.utc)
    return Product(id=f"id-{day}-{orbit}", name=f"S1A_{day}_{orbit}", start=start, product_type=kind,
                   orbit_direction=direction, relative_orbit=orbit, orbit=None, platform="S1A", size_bytes=1,
                   md5="0" * 32, coverage_pct=coverage)


def test_pair_is_the_tightest_covering_bracket_per_orbit():
    products = [slc("2018-08-24", 46), slc("2018-09-05", 46), slc("2018-09-17", 46), slc("2018-09-29", 46),
                slc("2018-08-29", 68, direction="ASCENDING"), slc("2018-09-04", 68, 60.0, "ASCENDING"),
                slc("2018-09-10", 68, direction="ASCENDING"), slc("2018-09-01", 119, 40.0, "ASCENDING")]
    options = select_pair(products, "iburi", EVENT, EVENT)
    best = options[0]
    assert (best.relative_orbit, best.pre.date.isoformat(), best.post.date.isoformat()) == (46, "2018-09-05",
                                                                                            "2018-09-17")
    assert [(o.relative_orbit, o.baseline_days) for o in options] == [(46, 12), (68, 12), (119, None)]
    assert "area not covered" in options[2].reason and "40.0%" in options[2].reason
    # Accepting 60 % coverage makes orbit 68's 09-04 / 09-10 pair (6 days) the best.
    relaxed = select_pair(products, "iburi", EVENT, EVENT, min_coverage_pct=60.0)
    assert (relaxed[0].relative_orbit, relaxed[0].baseline_days) == (68, 6)


def test_image_on_the_last_event_day_counts_as_post_event_only_when_allowed():
    # Tiburon 2021 (Table 4.1): event 2021-08-14 .. 08-17, pair 08-05 / 08-17.
    products = [slc("2021-08-05", 4), slc("2021-08-17", 4), slc("2021-08-29", 4)]
    start, end = date(2021, 8, 14), date(2021, 8, 17)
    assert rank_orbits(products, start, end)[0].post.date == date(2021, 8, 17)
    assert rank_orbits(products, start, end, post_on_event_end=False)[0].post.date == date(2021, 8, 29)


def test_no_pair_says_why_per_orbit():
    with pytest.raises(NoPairError) as caught:
        select_pair([slc("2018-08-24", 46), slc("2018-09-05", 46), slc("2018-09-01", 119, 40.0, "ASCENDING"),
                     slc("2018-09-12", 21, kind="IW_GRDH_1S"), slc("2018-09-20", 77)], "iburi", EVENT, EVENT)
    reasons = "\n".join(caught.value.reasons)
    assert "relative orbit 46 DESCENDING: no post-event image yet: the latest covering acquisition is 2018-09-05" \
        in reasons
    assert "relative orbit 119 ASCENDING: area not covered" in reasons
    assert "relative orbit 21 DESCENDING: only IW_GRDH_1S products" in reasons
    assert "relative orbit 77 DESCENDING: no pre-event image in the window" in reasons


# --- downloads ------------------------------------------------------------------------------------------------

def test_dropped_connection_resumes_with_range(cdse, tmp_path):
    fake = by_date(cdse, "2018-09-05")
    cdse.faults[fake.id] = ["drop"]
    [path] = download_products([product_file(fake)], tmp_path, tokens_for(cdse), settings(cdse), progress=False)
    assert path == tmp_path / f"{fake.name}.zip" and path.read_bytes() == fake.payload
    first, second = cdse.downloads()
    assert first["range"] is None and 0 < first["sent"] < len(fake.payload)
    resumed_at = int(second["range"].removeprefix("bytes=").rstrip("-"))
    assert second["status"] == 206 and 0 < resumed_at <= first["sent"]
    assert second["sent"] == len(fake.payload) - resumed_at  # only the rest travelled again
    assert not list(tmp_path.glob(".*.part"))


def test_corrupted_byte_is_caught_and_downloaded_again(cdse, tmp_path, caplog):
    fake = by_date(cdse, "2018-09-17")
    cdse.faults[fake.id] = ["corrupt"]
    [path] = download_products([product_file(fake)], tmp_path, tokens_for(cdse), settings(cdse), progress=False)
    assert hashlib.md5(path.read_bytes()).hexdigest() == hashlib.md5(fake.payload).hexdigest()
    assert [r["range"] for r in cdse.downloads()] == [None, None]  # the bad copy was not resumed from
    assert "checksum mismatch" in caplog.text


def test_401_refreshes_the_token_and_503_is_retried(cdse, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3's request lines included
    fake = by_date(cdse, "2018-09-05")
    tokens = tokens_for(cdse)
    tokens.token()
    cdse.revoke_tokens()  # the token expires before the download starts
    cdse.faults[fake.id] = ["503"]
    download_products([product_file(fake)], tmp_path, tokens, settings(cdse), progress=False)
    assert cdse.token_grants == ["password", "refresh_token"]
    assert [r["status"] for r in cdse.downloads()] == [401, 503, 200]
    assert "renewing the access token" in caplog.text and "Starting new HTTP connection" in caplog.text
    assert PASSWORD not in caplog.text and "tok-" not in caplog.text


def test_retries_give_up_with_a_clear_error_and_keep_nothing_final(cdse, tmp_path):
    fake = by_date(cdse, "2018-09-05")
    cdse.faults[fake.id] = ["503"] * 5
    with pytest.raises(DownloadError, match=r"HTTP 503 .*gave up after 3 attempts"):
        download_products([product_file(fake)], tmp_path, tokens_for(cdse), settings(cdse, max_attempts=3),
                          progress=False)
    assert not (tmp_path / f"{fake.name}.zip").exists()


def test_rerun_skips_verified_files_and_replaces_a_damaged_one(cdse, tmp_path):
    pre, post = by_date(cdse, "2018-09-05"), by_date(cdse, "2018-09-17")
    files = [product_file(pre), product_file(post)]
    download_products(files, tmp_path, tokens_for(cdse), settings(cdse), progress=False)
    assert len(cdse.downloads()) == 2
    download_products(files, tmp_path, tokens_for(cdse), settings(cdse), progress=False)
    assert len(cdse.downloads()) == 2  # nothing fetched again
    damaged = tmp_path / f"{post.name}.zip"
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    download_products(files, tmp_path, tokens_for(cdse), settings(cdse), progress=False)
    assert len(cdse.downloads()) == 3 and damaged.read_bytes() == post.payload


def test_parallel_downloads_respect_the_limit(cdse, tmp_path):
    cdse.download_delay_s = 0.3
    files = [product_file(by_date(cdse, day)) for day in ("2018-09-05", "2018-09-17", "2018-08-24")]
    download_products(files, tmp_path, tokens_for(cdse), settings(cdse, parallel=1), progress=False)
    assert cdse.max_active_downloads == 1 and len(cdse.downloads()) == 3


def test_disk_space_is_checked_before_any_byte(cdse, tmp_path):
    fake = by_date(cdse, "2018-09-05")
    with pytest.raises(DiskSpaceError, match="transfer.free_space_margin_gb"):
        download_products([product_file(fake)], tmp_path, tokens_for(cdse),
                          settings(cdse, free_space_margin_gb=1e9), progress=False)
    assert cdse.downloads() == [] and cdse.token_grants == []


def test_wrong_password_is_refused_without_showing_it(cdse, tmp_path):
    fake = by_date(cdse, "2018-09-05")
    wrong = "not-the-Pa55word"
    tokens = TokenSource(Credentials(USERNAME, wrong, "test"), cdse.overrides()["token_url"])
    with pytest.raises(CredentialsError) as caught:
        download_products([product_file(fake)], tmp_path, tokens, settings(cdse), progress=False)
    assert "HTTP 401" in str(caught.value) and wrong not in str(caught.value) and wrong not in repr(tokens)


# --- credentials ------------------------------------------------------------------------------------------------

def test_credentials_from_environment_then_netrc(tmp_path, monkeypatch):
    token_url = "https://identity.example.org/auth/token"
    monkeypatch.delenv("CDSE_USERNAME", raising=False)
    monkeypatch.delenv("CDSE_PASSWORD", raising=False)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text(f"machine identity.example.org login {USERNAME} password {PASSWORD}\n")
    found = find_credentials(token_url, netrc_file)
    assert (found.username, found.password) == (USERNAME, PASSWORD) and PASSWORD not in repr(found)
    assert find_credentials("https://other.example.org/token", netrc_file) is None
    monkeypatch.setenv("CDSE_USERNAME", "env-user")
    monkeypatch.setenv("CDSE_PASSWORD", "env-pass")
    assert find_credentials(token_url, netrc_file).username == "env-user"
    monkeypatch.delenv("CDSE_PASSWORD")
    with pytest.raises(CredentialsError, match="CDSE_PASSWORD is not set"):
        find_credentials(token_url, netrc_file)
    monkeypatch.delenv("CDSE_USERNAME")
    netrc_file.write_text(f"{PASSWORD} machine identity.example.org\n")  # Python's own message would quote it
    with pytest.raises(CredentialsError) as caught:
        find_credentials(token_url, netrc_file)
    assert "cannot parse the .netrc file" in str(caught.value) and PASSWORD not in str(caught.value)


def test_redacting_filter_masks_secrets_in_log_records(caplog):
    source = Credentials(USERNAME, PASSWORD, "test")
    logger = logging.getLogger("test_acquire.redaction")
    caplog.handler.addFilter(RedactingFilter(source))
    try:
        logger.warning("server echoed %s back", PASSWORD)
    finally:
        caplog.handler.filters.clear()
    assert "server echoed *** back" in caplog.text and PASSWORD not in caplog.text


# --- SAFE archives --------------------------------------------------------------------------------------------

def _zip_with(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize("evil, problem", [
    ("S1A_X.SAFE/../../evil", "'..' component"),
    ("/tmp/absolute-evil", "absolute path"),
    ("symlink", "symbolic link"),
])
def test_unsafe_zip_entries_are_refused_and_nothing_is_written(tmp_path, evil, problem):
    entries = [("S1A_X.SAFE/manifest.safe", b"<xfdu/>")]
    if evil == "symlink":
        link = zipfile.ZipInfo("S1A_X.SAFE/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        entries.append((link, b"/etc/passwd"))
        evil = "S1A_X.SAFE/link"
    else:
        entries.append((evil, b"owned"))
    archive = _zip_with(tmp_path / "bad.zip", entries)
    target = tmp_path / "target"
    before = sorted(p for p in tmp_path.parent.rglob("*") if "target" not in p.parts)
    with pytest.raises(SafeArchiveError) as caught:
        extract_safe(archive, target)
    assert evil in str(caught.value) and problem in str(caught.value) and str(archive) in str(caught.value)
    assert not target.exists() or not any(target.iterdir())
    assert sorted(p for p in tmp_path.parent.rglob("*") if "target" not in p.parts) == before
    assert not Path("/tmp/absolute-evil").exists()


def test_safe_zip_unpacks_and_needs_its_manifest(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(safe_zip("S1A_GOOD.SAFE", 1000, 0))
    folder = extract_safe(good, tmp_path / "out")
    assert folder == tmp_path / "out" / "S1A_GOOD.SAFE" and (folder / "manifest.safe").is_file()
    assert (folder / "measurement" / "s1-iw2-slc-vv.tiff").stat().st_size == 1000
    incomplete = _zip_with(tmp_path / "incomplete.zip", [("S1A_BAD.SAFE/measurement/a.tiff", b"1")])
    with pytest.raises(SafeArchiveError, match="S1A_BAD.SAFE/manifest.safe is missing"):
        check_safe_zip(incomplete)


# --- orbits ---------------------------------------------------------------------------------------------------

def test_orbit_files_are_filed_where_snap_looks(tmp_path, monkeypatch):
    eof_name = "S1B_OPER_AUX_POEORB_OPOD_20180925T110554_V20180904T225942_20180906T005942.EOF"
    start = datetime(2018, 9, 5, 20, 42, 26, tzinfo=timezone.utc)
    assert snap_orbit_folders(tmp_path, eof_name, start) == [tmp_path / "Orbits/Sentinel-1/POEORB/S1B/2018/09"]
    # A product on 1 October uses an orbit valid from 30 September: filed under both months.
    october = datetime(2018, 10, 1, 0, 30, tzinfo=timezone.utc)
    eof_october = "S1B_OPER_AUX_POEORB_OPOD_20181021T110554_V20180930T225942_20181002T005942.EOF"
    assert snap_orbit_folders(tmp_path, eof_october, october) == [
        tmp_path / "Orbits/Sentinel-1/POEORB/S1B/2018/10", tmp_path / "Orbits/Sentinel-1/POEORB/S1B/2018/09"]

    calls = []

    def fake_download_eofs(orbit_dts, missions, save_dir, orbit_type, cdse_access_token):
        calls.append((orbit_dts, missions, orbit_type, cdse_access_token))
        (Path(save_dir) / eof_name).write_text("<Earth_Explorer_File/>")
        return [Path(save_dir) / eof_name]

    monkeypatch.setattr("eof.download.download_eofs", fake_download_eofs)
    product = "S1B_IW_SLC__1SDV_20180905T204226_20180905T204253_012612_0173E4_2042.SAFE"
    [filed] = fetch_orbits([product], tmp_path, access_token="tok")
    assert filed == tmp_path / "Orbits/Sentinel-1/POEORB/S1B/2018/09" / f"{eof_name}.zip"
    with zipfile.ZipFile(filed) as archive:
        assert archive.namelist() == [eof_name]
    assert calls == [([datetime(2018, 9, 5, 20, 42, 26, tzinfo=timezone.utc)], ["S1B"], "precise", "tok")]
    assert fetch_orbits([product], tmp_path, access_token="tok") == [filed] and len(calls) == 1  # already there
    assert install_orbit_file(tmp_path / "none" / eof_name, tmp_path, start)[0] == filed  # present: not rewritten


def _pair_file(cdse: FakeCdse, tmp_path: Path) -> Path:
    pre, post = by_date(cdse, "2018-09-05"), by_date(cdse, "2018-09-17")
    pair = tmp_path / "iburi_2018" / "pair.json"
    pair.parent.mkdir()
    pair.write_text(json.dumps({"pre": {"name": pre.name, "id": pre.id}, "post": {"name": post.name, "id": post.id}}))
    return pair


def test_orbit_fetch_renews_the_token_after_long_downloads(cdse, tmp_path, monkeypatch):
    import requests

    from data_prep.acquire import cli

    monkeypatch.setenv("CDSE_USERNAME", USERNAME)
    monkeypatch.setenv("CDSE_PASSWORD", PASSWORD)
    real_download = cli.download_products

    def download_then_expire(*args, **kwargs):
        paths = real_download(*args, **kwargs)
        cdse.revoke_tokens()  # the downloads outlasted the token
        return paths

    monkeypatch.setattr(cli, "download_products", download_then_expire)
    handed = []

    def fake_download_eofs(orbit_dts, missions, save_dir, orbit_type, cdse_access_token):
        handed.append(cdse_access_token)
        if cdse_access_token not in cdse.valid_tokens:  # what CDSE does with an expired token
            response = requests.Response()
            response.status_code, response.url = 401, "https://catalogue.dataspace.copernicus.eu/odata/v1/Products"
            response.reason = "Unauthorized"
            response.raise_for_status()
        name = {5: "S1B_OPER_AUX_POEORB_OPOD_20180925T110554_V20180904T225942_20180906T005942.EOF",
                17: "S1B_OPER_AUX_POEORB_OPOD_20181007T110554_V20180916T225942_20180918T005942.EOF"}[orbit_dts[0].day]
        (Path(save_dir) / name).write_text("<Earth_Explorer_File/>")
        return [Path(save_dir) / name]

    monkeypatch.setattr("eof.download.download_eofs", fake_download_eofs)
    pair = _pair_file(cdse, tmp_path)
    aux = tmp_path / "aux"
    assert cli.run(_compose(cdse, f"pair={pair}", "orbits.fetch=true", f"orbits.snap_auxdata_dir={aux}")) == 0
    assert cdse.token_grants == ["password", "refresh_token"]  # renewed once, before sentineleof
    assert len(handed) == 2 and all(t in cdse.valid_tokens for t in handed)
    assert len(list(aux.rglob("*.EOF.zip"))) == 2


def test_orbit_fetch_http_failure_is_one_line_and_exit_1(cdse, tmp_path, monkeypatch, caplog):
    import requests

    from data_prep.acquire import cli

    monkeypatch.setenv("CDSE_USERNAME", USERNAME)
    monkeypatch.setenv("CDSE_PASSWORD", PASSWORD)

    def failing_download_eofs(**kwargs):
        response = requests.Response()
        response.status_code, response.reason = 503, "Service Unavailable"
        response.url = "https://catalogue.dataspace.copernicus.eu/odata/v1/Products"
        response.raise_for_status()

    monkeypatch.setattr("eof.download.download_eofs", failing_download_eofs)
    pair = _pair_file(cdse, tmp_path)
    status = cli.run(_compose(cdse, f"pair={pair}", "orbits.fetch=true", f"orbits.snap_auxdata_dir={tmp_path / 'a'}"))
    assert status == cli.EXIT_FAILED
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith(f"{by_date(cdse, '2018-09-05').name}: orbit file download failed (HTTPError: 503 Server "
                           "Error: Service Unavailable for url")
    assert "\n" not in line and "Traceback" not in caplog.text


# --- the command ----------------------------------------------------------------------------------------------

def _cli(cdse: FakeCdse, tmp_path: Path, *args: str, password: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSE_")}
    env |= {"PYTHONPATH": worktree_env()["PYTHONPATH"], "HOME": str(tmp_path / "home")}
    if password:
        env |= {"CDSE_USERNAME": USERNAME, "CDSE_PASSWORD": PASSWORD}
    urls = cdse.overrides()
    cmd = [sys.executable, "-m", "data_prep.acquire", f"catalogue.odata_url={urls['odata_url']}",
           f"catalogue.token_url={urls['token_url']}", f"catalogue.download_url={urls['download_url']}",
           "progress=false", "transfer.backoff_s=0", "transfer.free_space_margin_gb=0", "transfer.chunk_mb=0.0625",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


AOI_OVERRIDE = "aoi='POLYGON((142.0 42.7, 142.1 42.7, 142.1 42.8, 142.0 42.8, 142.0 42.7))'"


@pytest.mark.e2e
def test_cli_searches_chooses_downloads_and_keeps_the_password_out(cdse, tmp_path):
    out = tmp_path / "out"
    pre, post = by_date(cdse, "2018-09-05"), by_date(cdse, "2018-09-17")
    cdse.faults[pre.id] = ["drop"]
    cdse.faults[post.id] = ["corrupt"]
    done = _cli(cdse, tmp_path, "event=iburi_2018", AOI_OVERRIDE, f"out_dir={out}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if "candidate(s)" in line):]
    assert table[0].startswith("10 IW_SLC__1S candidate(s) for iburi_2018 (event 2018-09-06 .. 2018-09-06")
    assert table[1].split() == ["name", "date", "orbit", "direction", "rel.orbit", "size", "GB", "cover", "%"]
    row = next(line for line in table if line.startswith(pre.name)).split()
    assert row[1:] == ["2018-09-05", "12612", "DESCENDING", "46", "0.00", "100.0"]
    assert next(line for line in table if "2018-09-04" in line).split()[-1] == "60.0"
    record = json.loads((out / "iburi_2018" / "pair.json").read_text())
    assert (record["pre"]["name"], record["post"]["name"], record["baseline_days"]) == (pre.name, post.name, 12)
    assert {k: record["pre"][k] for k in ("id", "date", "relative_orbit", "orbit_direction")} == {
        "id": pre.id, "date": "2018-09-05", "relative_orbit": 46, "orbit_direction": "DESCENDING"}
    assert record["post"]["date"] == "2018-09-17"
    assert [a["relative_orbit"] for a in record["alternatives"]] == [68, 119]
    assert (out / "iburi_2018" / f"{pre.name}.zip").read_bytes() == pre.payload
    assert [r["range"] is not None for r in cdse.downloads() if r["id"] == pre.id] == [False, True]  # resumed
    assert (out / "iburi_2018" / f"{post.name}.zip").read_bytes() == post.payload
    logs = list((out / ".logs").rglob("*"))
    assert any(p.name == "config.yaml" for p in logs) and any(p.suffix == ".log" for p in logs)
    assert "checksum mismatch" in "".join(p.read_text() for p in logs if p.suffix == ".log")
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PASSWORD.encode() not in data and USERNAME.encode() not in data, path
            assert b"tok-" not in data and b"ref-" not in data, path  # nor do the tokens
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.e2e
def test_cli_without_credentials_stops_after_pair_json(cdse, tmp_path):
    out = tmp_path / "out"
    done = _cli(cdse, tmp_path, "event=iburi_2018", AOI_OVERRIDE, f"out_dir={out}", password=False)
    assert done.returncode == 3
    assert "CDSE_USERNAME and CDSE_PASSWORD" in done.stdout + done.stderr
    assert (out / "iburi_2018" / "pair.json").is_file() and cdse.downloads() == []
    again = _cli(cdse, tmp_path, f"pair={out / 'iburi_2018' / 'pair.json'}", "unpack=true")  # with credentials
    assert again.returncode == 0, again.stderr
    assert len(list((out / "iburi_2018").glob("*.zip"))) == 2
    assert len(list((out / "iburi_2018").glob("*.SAFE/manifest.safe"))) == 2
    assert (out / ".logs").is_dir()  # out_dir defaults to the folder above the pair's


@pytest.mark.e2e
def test_cli_no_pair_cases(cdse, tmp_path):
    late = _cli(cdse, tmp_path, "event_date=2018-09-30", AOI_OVERRIDE, f"out_dir={tmp_path / 'a'}")
    assert late.returncode == 1
    assert "relative orbit 46 DESCENDING: no post-event image yet" in late.stdout + late.stderr
    grd = _cli(cdse, tmp_path, "event_date=2020-06-10",
               "aoi='POLYGON((10 45, 10.1 45, 10.1 45.1, 10 45.1, 10 45))'", f"out_dir={tmp_path / 'b'}")
    assert grd.returncode == 1 and "only IW_GRDH_1S products" in grd.stdout + grd.stderr
    assert not list(tmp_path.rglob("pair.json"))


def _compose(cdse: FakeCdse, *overrides: str):
    from hydra import compose, initialize_config_dir

    from insarslide.config import config_dir

    urls = cdse.overrides()
    base = [f"catalogue.odata_url={urls['odata_url']}", f"catalogue.token_url={urls['token_url']}",
            f"catalogue.download_url={urls['download_url']}", "progress=false", "transfer.backoff_s=0",
            "transfer.free_space_margin_gb=0", "credentials.netrc=null"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="acquire", overrides=base + list(overrides))


def test_orbit_filters_and_coverage_rule_from_the_config(cdse, tmp_path, capsys):
    from data_prep.acquire.cli import run

    aoi = AOI_OVERRIDE.replace("'", '"')
    assert run(_compose(cdse, "event=iburi_2018", aoi, f"out_dir={tmp_path}", "relative_orbit=68",
                        "download=false")) == 0
    record = json.loads((tmp_path / "iburi_2018" / "pair.json").read_text())
    assert (record["pre"]["date"], record["post"]["date"], record["alternatives"]) == ("2018-08-29", "2018-09-10", [])
    assert "4 IW_SLC__1S candidate(s)" in capsys.readouterr().out
    assert run(_compose(cdse, "event=iburi_2018", aoi, f"out_dir={tmp_path}", "orbit_direction=ASCENDING",
                        "selection.min_coverage_pct=60", "download=false")) == 0
    record = json.loads((tmp_path / "iburi_2018" / "pair.json").read_text())
    assert (record["pre"]["date"], record["post"]["date"], record["baseline_days"]) == ("2018-09-04", "2018-09-10", 6)


def test_pair_file_without_checksum_is_completed_from_the_catalogue(cdse, tmp_path, monkeypatch):
    from data_prep.acquire.cli import run

    monkeypatch.setenv("CDSE_USERNAME", USERNAME)
    monkeypatch.setenv("CDSE_PASSWORD", PASSWORD)
    pre, post = by_date(cdse, "2018-09-05"), by_date(cdse, "2018-09-17")
    pair = tmp_path / "iburi_2018" / "pair.json"
    pair.parent.mkdir()
    pair.write_text(json.dumps({"pre": {"name": pre.name, "id": pre.id}, "post": {"name": post.name, "id": post.id}}))
    assert run(_compose(cdse, f"pair={pair}")) == 0
    assert sorted(r["id"] for r in cdse.requests if r["kind"] == "product") == sorted([pre.id, post.id])
    assert (pair.parent / f"{post.name}.zip").read_bytes() == post.payload


def test_bad_arguments_are_named(cdse, tmp_path, caplog):
    from data_prep.acquire.cli import EXIT_USAGE, run

    assert run(_compose(cdse, "event=atlantis_2030", f"out_dir={tmp_path}")) == EXIT_USAGE
    assert "event='atlantis_2030' is not in data_prep/events.csv" in caplog.text
    assert run(_compose(cdse, "event_date=2018-13-01", f"out_dir={tmp_path}")) == EXIT_USAGE
    assert "event_date: '2018-13-01' is not a date" in caplog.text
    bad = tmp_path / "pair.json"
    bad.write_text(json.dumps({"pre": {"name": "../../etc/x", "id": "1"}, "post": {"name": "b", "id": "2"}}))
    assert run(_compose(cdse, f"pair={bad}")) == EXIT_USAGE
    assert "'pre.name' '../../etc/x' is not a product name" in caplog.text
    assert cdse.requests == []

"""The Hydra command: search, choose the pair, write ``pair.json``, download, verify (``conf/acquire.yaml``).

    python -m data_prep.acquire event=iburi_2018 'aoi="POLYGON((...))"' out_dir=DIR [download=false]
    python -m data_prep.acquire pair=DIR/iburi_2018/pair.json

Results (the candidate table, the pair, the files) are printed; problems are
logged (console and ``out_dir/.logs/<time>/``). Exit status: 0 done; 1 failed
(the message says why); 2 bad arguments; 3 pair chosen but no credentials to
download it (the message says how to give them).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import requests
from omegaconf import DictConfig, OmegaConf

from data_prep.acquire.auth import (
    CredentialsError,
    RedactingFilter,
    TokenSource,
    TransientAuthError,
    find_credentials,
    how_to_provide,
)
from data_prep.acquire.catalogue import (
    AoiError,
    CatalogueError,
    Product,
    aoi_query_wkt,
    format_table,
    load_aoi,
    product_by_id,
    product_types_present,
    search_products,
)
from data_prep.acquire.orbits import OrbitError, fetch_orbits
from data_prep.acquire.pairs import (
    NoPairError,
    PairFileError,
    pair_record,
    read_pair,
    select_pair,
)
from data_prep.acquire.safe import SafeArchiveError, extract_safe
from data_prep.acquire.transfer import (
    DiskSpaceError,
    DownloadError,
    ProductFile,
    RetriesExhausted,
    TransferSettings,
    download_products,
)
from data_prep.events import load_catalogue
from insarslide.atomic import write_json_atomic
from insarslide.config import config_dir

log = logging.getLogger("data_prep.acquire")

EXIT_FAILED, EXIT_USAGE, EXIT_NO_CREDENTIALS = 1, 2, 3


class UsageError(ValueError):
    """The command line is incomplete or contradictory; the message names the key."""


def _out_dir_from_pair(pair: str | None) -> str:
    if not pair:
        raise UsageError("out_dir is required (or pair=DIR/<event>/pair.json to download a pair chosen earlier)")
    return str(Path(pair).expanduser().resolve().parent.parent)


if not OmegaConf.has_resolver("acquire_out_dir"):
    OmegaConf.register_new_resolver("acquire_out_dir", _out_dir_from_pair)


@dataclass(frozen=True)
class EventWindow:
    name: str
    start: date
    end: date


def _iso_day(value, key: str) -> date:
    try:
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        raise UsageError(f"{key}: {value!r} is not a date YYYY-MM-DD") from None


def resolve_event(cfg: DictConfig) -> EventWindow:
    """The event's name and first/last day from ``event`` (catalogue) or ``event_date`` [``event_end_date``]."""
    if cfg.event_date is not None:
        start = _iso_day(cfg.event_date, "event_date")
        end = _iso_day(cfg.event_end_date, "event_end_date") if cfg.event_end_date is not None else start
        if end < start:
            raise UsageError(f"event_end_date {end} is before event_date {start}")
        name = str(cfg.event) if cfg.event else f"event_{start.isoformat()}"
    elif cfg.event:
        catalogue = load_catalogue()
        if cfg.event not in catalogue:
            raise UsageError(f"event={cfg.event!r} is not in data_prep/events.csv (known: {', '.join(sorted(catalogue))}); "
                             "for another event give event_date=YYYY-MM-DD")
        entry = catalogue[cfg.event]
        name, start, end = entry.event_id, date.fromisoformat(entry.event_start), date.fromisoformat(entry.event_end)
    else:
        raise UsageError("give event=<id of data_prep/events.csv> or event_date=YYYY-MM-DD")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise UsageError(f"event={name!r}: use letters, digits, '_' and '-' only (it names the output folder)")
    return EventWindow(name, start, end)


def transfer_settings(cfg: DictConfig) -> TransferSettings:
    """The run's transfer settings; their ``retry`` policy serves the catalogue requests and the downloads."""
    return TransferSettings(download_url=cfg.catalogue.download_url, **OmegaConf.to_container(cfg.transfer))


def _explain_empty(session, cfg: DictConfig, aoi, first: date, last: date, settings: TransferSettings) -> str:
    types = product_types_present(session, cfg.catalogue.odata_url, aoi, first, last,
                                  collection=cfg.search.collection, page_size=cfg.search.page_size,
                                  timeout_s=cfg.search.timeout_s, retry=settings.retry)
    wanted = cfg.search.product_type
    if types:
        return f"only {', '.join(types)} products over the area between {first} and {last}, no {wanted}"
    return f"no {cfg.search.collection} product intersects the area between {first} and {last}"


def search_and_choose(cfg: DictConfig, session: requests.Session,
                      settings: TransferSettings | None = None) -> tuple[Path, dict]:
    """Search, print the candidate table, choose the pair and write ``pair.json``; its folder and content."""
    settings = settings or transfer_settings(cfg)
    event = resolve_event(cfg)
    if cfg.aoi is None:
        raise UsageError("aoi is required: a WKT polygon (lon lat) or a GeoJSON/Shapefile path")
    aoi = load_aoi(cfg.aoi)
    first, last = event.start - timedelta(days=cfg.search.days_before), event.end + timedelta(days=cfg.search.days_after)
    products: list[Product] = search_products(
        session, cfg.catalogue.odata_url, aoi, first, last, collection=cfg.search.collection,
        product_type=cfg.search.product_type, orbit_direction=cfg.orbit_direction,
        relative_orbit=cfg.relative_orbit, page_size=cfg.search.page_size, timeout_s=cfg.search.timeout_s,
        retry=settings.retry)
    print(f"{len(products)} {cfg.search.product_type} candidate(s) for {event.name} "
          f"(event {event.start} .. {event.end}, window {first} .. {last}):")
    print(format_table(products))
    if not products:
        raise NoPairError(event.name, [_explain_empty(session, cfg, aoi, first, last, settings)])
    options = select_pair(products, event.name, event.start, event.end, min_coverage_pct=cfg.selection.min_coverage_pct,
                          post_on_event_end=cfg.selection.post_on_event_end, product_type=cfg.search.product_type)
    search = {"window": [first.isoformat(), last.isoformat()], "product_type": cfg.search.product_type,
              "orbit_direction": cfg.orbit_direction, "relative_orbit": cfg.relative_orbit,
              "min_coverage_pct": cfg.selection.min_coverage_pct, "candidates": len(products)}
    record = pair_record(options, event=event.name, event_start=event.start, event_end=event.end,
                         aoi_wkt=aoi_query_wkt(aoi), search=search)
    event_dir = Path(cfg.out_dir) / event.name
    write_json_atomic(event_dir / "pair.json", record)
    chosen = options[0]
    print(f"pair: relative orbit {chosen.relative_orbit} {chosen.orbit_direction}, baseline {chosen.baseline_days} "
          f"days\n  pre  {chosen.pre.date} {chosen.pre.name}\n  post {chosen.post.date} {chosen.post.name}\n"
          f"written {event_dir / 'pair.json'}")
    return event_dir, record


def _product_file(entry: dict, session, cfg: DictConfig, settings: TransferSettings) -> ProductFile:
    size, md5 = entry.get("size_bytes"), entry.get("md5")
    if not size or not md5:
        fresh = product_by_id(session, cfg.catalogue.odata_url, entry["id"], timeout_s=cfg.search.timeout_s,
                              retry=settings.retry)
        size, md5 = fresh.size_bytes, fresh.md5
    return ProductFile(id=str(entry["id"]), name=str(entry["name"]), size_bytes=int(size or 0), md5=str(md5 or ""))


def download_pair(cfg: DictConfig, session: requests.Session, event_dir: Path, record: dict,
                  settings: TransferSettings | None = None) -> int:
    settings = settings or transfer_settings(cfg)
    credentials = find_credentials(cfg.catalogue.token_url, cfg.credentials.netrc)
    if credentials is None:
        log.warning("no CDSE credentials, so nothing was downloaded: %s; then run\n  python -m data_prep.acquire pair=%s",
                    how_to_provide(cfg.catalogue.token_url), event_dir / "pair.json")
        return EXIT_NO_CREDENTIALS
    tokens = TokenSource(credentials, cfg.catalogue.token_url, client_id=cfg.catalogue.client_id,
                         timeout_s=cfg.transfer.timeout_s, session=session)
    redact = RedactingFilter(tokens)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    products = [_product_file(record[role], session, cfg, settings) for role in ("pre", "post")]
    extra = sum(p.size_bytes for p in products) if cfg.unpack else 0  # SAFE zips are barely compressed
    paths = download_products(products, event_dir, tokens, settings, progress=cfg.progress,
                              extra_space_bytes=extra, session=session)
    for path in paths:
        print(f"verified {path}")
        if cfg.unpack:
            print(f"unpacked {extract_safe(path, event_dir)}")
    if cfg.orbits.fetch:
        # The downloads may have outlasted the token (CDSE's live 10 minutes): hand sentineleof a fresh one.
        fresh = settings.retry.call("token service", lambda: tokens.renew(tokens.token()), (TransientAuthError,))
        for path in fetch_orbits([p.name for p in products], cfg.orbits.snap_auxdata_dir,
                                 orbit_type=cfg.orbits.type, access_token=fresh):
            print(f"orbit file {path}")
    return 0


def run(cfg: DictConfig) -> int:
    """The whole command; returns the exit status (messages go to stdout/stderr and the log)."""
    session = requests.Session()
    session.headers["User-Agent"] = "insarslide-acquire"
    try:
        settings = transfer_settings(cfg)
        if cfg.pair:
            record = read_pair(cfg.pair)
            event_dir = Path(cfg.pair).expanduser().resolve().parent
        else:
            event_dir, record = search_and_choose(cfg, session, settings)
        if not cfg.download:
            print("download=false: stopping after pair.json")
            return 0
        return download_pair(cfg, session, event_dir, record, settings)
    except (UsageError, AoiError, PairFileError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except (NoPairError, CatalogueError, CredentialsError, DownloadError, DiskSpaceError, SafeArchiveError,
            OrbitError, RetriesExhausted, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except requests.RequestException as exc:  # an HTTP failure no step above turned into its own message
        log.error("HTTP failure: %s", (str(exc).splitlines() or [type(exc).__name__])[0])
        return EXIT_FAILED


def main() -> None:
    import hydra

    # An absolute path: the decorated function lives in a package module, where Hydra would look for a package 'conf'.
    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="acquire")
    def _run(cfg: DictConfig) -> None:
        status = run(cfg)
        if status:
            sys.exit(status)

    _run()

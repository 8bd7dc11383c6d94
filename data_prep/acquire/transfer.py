"""Download zipped SAFE products from CDSE: resumable, verified, retried, in parallel.

Each product streams to ``.<name>.zip.part`` beside its final name. A dropped
connection resumes from the bytes already on disk with an HTTP ``Range``
request; 5xx, 429, timeouts and connection errors are retried with
exponential backoff (:class:`RetryPolicy`, tenacity; a ``Retry-After`` answer is
honoured); an HTTP 401 renews the token and tries again. The catalogue
requests use the same policy object.
The finished file must have the catalogue's size and MD5 and be a complete
SAFE zip (:func:`data_prep.acquire.safe.check_safe_zip`) before it is renamed
to ``<name>.zip``; a corrupted download is deleted and fetched again. A rerun
skips final files (re-hashing them first with ``verify_existing``). Free disk
space is checked before the first byte.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from data_prep.acquire.auth import TokenSource, TransientAuthError
from data_prep.acquire.safe import check_safe_zip

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5


T = TypeVar("T")


class TransientError(RuntimeError):
    """A failure worth retrying (5xx, 429, dropped connection, timeout); ``retry_after_s`` is the server's wish."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransientDownloadError(TransientError):
    """A failure worth retrying: server error, dropped connection, timeout, checksum mismatch."""


class RetriesExhausted(RuntimeError):
    """A :class:`RetryPolicy` gave up; the message names the last failure, the attempts and the time spent."""


def retry_after_seconds(response: requests.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delay-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff, for downloads and catalogue requests alike.

    Attempt n waits ``backoff_s * 2**(n-1)`` seconds (at most ``backoff_max_s``) before the next, or the server's
    ``Retry-After`` when it gave one. It gives up after ``max_attempts`` tries, or as soon as the next wait would end
    more than ``max_total_s`` seconds after the first try.
    """

    max_attempts: int = 8
    backoff_s: float = 2.0
    backoff_max_s: float = 120.0
    max_total_s: float = 900.0

    def wait_s(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        server_wish = getattr(error, "retry_after_s", None)
        if server_wish is not None:
            return float(server_wish)
        return float(wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s)(state))

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.max_attempts:
            return True
        return state.seconds_since_start + self.wait_s(state) > self.max_total_s

    def call(self, what: str, function: Callable[[], T], transient: tuple[type[BaseException], ...]) -> T:
        """``function()``, retried on ``transient`` errors; :class:`RetriesExhausted` (one line) when it gives up.

        ``what`` prefixes the message (empty when the error names its subject already).
        """
        def announce(state: RetryCallState) -> None:
            log.warning("%s (attempt %d of %d); retrying in %.0f s", state.outcome.exception(), state.attempt_number,
                        self.max_attempts, self.wait_s(state))

        retrying = Retrying(stop=self._stop, wait=self.wait_s, retry=retry_if_exception_type(transient), reraise=True,
                            before_sleep=announce)
        started = datetime.now(timezone.utc)
        attempts = 0
        try:
            for attempt in retrying:
                attempts = attempt.retry_state.attempt_number
                with attempt:
                    return function()
        except transient as exc:
            spent = (datetime.now(timezone.utc) - started).total_seconds()
            wish = getattr(exc, "retry_after_s", None)
            why = (f"the server asked to wait {wish:.0f} s more" if wish is not None and attempts < self.max_attempts
                   else f"limits: {self.max_attempts} attempts, {self.max_total_s:g} s")
            plural = "s" if attempts != 1 else ""
            raise RetriesExhausted(f"{what + ': ' if what else ''}{exc} (gave up after {attempts} attempt{plural} in "
                                   f"{spent:.0f} s; {why}; rerun later)") from None
        raise AssertionError("unreachable: tenacity neither returned nor raised")  # pragma: no cover


class DownloadError(RuntimeError):
    """A download that cannot succeed (missing product, refused access, retries exhausted)."""


class DiskSpaceError(OSError):
    """Not enough free space for the downloads; the message gives both figures."""


@dataclass(frozen=True)
class TransferSettings:
    download_url: str
    parallel: int = 2
    max_attempts: int = 8
    backoff_s: float = 2.0
    backoff_max_s: float = 120.0
    max_total_s: float = 900.0
    timeout_s: float = 60.0
    chunk_mb: float = 1.0
    free_space_margin_gb: float = 2.0
    verify_existing: bool = True

    @cached_property
    def retry(self) -> RetryPolicy:
        """The one retry policy of a run (downloads and catalogue requests share it)."""
        return RetryPolicy(self.max_attempts, self.backoff_s, self.backoff_max_s, self.max_total_s)


@dataclass(frozen=True)
class ProductFile:
    """What the download needs to know of a product."""

    id: str
    name: str
    size_bytes: int
    md5: str

    @property
    def file_name(self) -> str:
        return f"{self.name}.zip"


def final_path(out_dir: Path, product: ProductFile) -> Path:
    return out_dir / product.file_name


def part_path(out_dir: Path, product: ProductFile) -> Path:
    return out_dir / f".{product.file_name}.part"


def file_md5(path: Path, chunk_bytes: int = 8 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def check_free_space(out_dir: Path, products: list[ProductFile], margin_gb: float, extra_bytes: int = 0) -> int:
    """Bytes still to download; :class:`DiskSpaceError` when they (plus ``extra_bytes`` and the margin) do not fit."""
    out_dir.mkdir(parents=True, exist_ok=True)
    needed = extra_bytes
    for product in products:
        if final_path(out_dir, product).exists():
            continue
        part = part_path(out_dir, product)
        needed += max(product.size_bytes - (part.stat().st_size if part.exists() else 0), 0)
    free = shutil.disk_usage(out_dir).free
    margin = int(margin_gb * 1e9)
    if needed + margin > free:
        raise DiskSpaceError(f"{out_dir}: {free / 1e9:.2f} GB free, the downloads need {needed / 1e9:.2f} GB plus a "
                             f"margin of {margin_gb:g} GB (transfer.free_space_margin_gb)")
    return needed


class _Download:
    """One product's transfer; :meth:`attempt` is one try, :meth:`run` retries it."""

    def __init__(self, product: ProductFile, out_dir: Path, tokens: TokenSource, settings: TransferSettings,
                 session: requests.Session, on_progress: Callable[[int], None]):
        self.product, self.tokens, self.settings, self.session = product, tokens, settings, session
        self.final, self.part = final_path(out_dir, product), part_path(out_dir, product)
        self.on_progress = on_progress  # called with the bytes on disk so far
        self.url = f"{settings.download_url.rstrip('/')}/Products({product.id})/$value"
        self.refused = 0  # consecutive 401 answers

    def _get(self, offset: int) -> requests.Response:
        token = self.tokens.token()
        headers = {"Authorization": f"Bearer {token}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        url = self.url
        # Redirects are followed by hand: requests drops the Authorization header when the host changes.
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self.session.get(url, headers=headers, stream=True, allow_redirects=False,
                                            timeout=self.settings.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientDownloadError(f"{self.product.name}: {type(exc).__name__} contacting {url}") from None
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                url = requests.compat.urljoin(url, response.headers["Location"])
                response.close()
                continue
            break
        if response.status_code == 401:
            response.close()
            self.refused += 1
            if self.refused > 2:
                raise DownloadError(f"{self.product.name}: the download service refused the renewed token "
                                    "(HTTP 401 three times): does the account have access?")
            log.info("%s: HTTP 401, renewing the access token", self.product.name)
            self.tokens.renew(token)
            return self._get(offset)
        self.refused = 0
        return response

    def attempt(self) -> None:
        offset = self.part.stat().st_size if self.part.exists() else 0
        if offset > self.product.size_bytes:
            self.part.unlink()
            offset = 0
        if offset < self.product.size_bytes:
            self._fetch(offset)
        self._verify_and_publish()

    def _fetch(self, offset: int) -> None:
        response = self._get(offset)
        with response:
            status = response.status_code
            if status == 404:
                raise DownloadError(f"{self.product.name}: not found at {self.url} (HTTP 404)")
            if status == 416:  # the range starts at or past the end: the part may already be complete
                return
            if status == 429 or status >= 500:
                raise TransientDownloadError(f"{self.product.name}: HTTP {status} from {self.url}",
                                             retry_after_seconds(response))
            if status not in (200, 206):
                raise DownloadError(f"{self.product.name}: HTTP {status} from {self.url}: {response.text[:200]}")
            if status == 200 and offset:
                log.info("%s: server ignored the Range request; starting over", self.product.name)
                offset = 0
            elif status == 206 and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise DownloadError(f"{self.product.name}: server answered range "
                                    f"{response.headers.get('Content-Range')!r} to a request from byte {offset}")
            if offset:
                log.info("%s: resuming at byte %d of %d", self.product.name, offset, self.product.size_bytes)
            self.on_progress(offset)
            chunk = max(int(self.settings.chunk_mb * (1 << 20)), 1 << 16)
            try:
                with open(self.part, "ab" if offset else "wb") as sink:
                    for block in response.iter_content(chunk):
                        sink.write(block)
                        offset += len(block)
                        self.on_progress(offset)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                raise TransientDownloadError(f"{self.product.name}: connection dropped at byte "
                                             f"{self.part.stat().st_size} ({type(exc).__name__})") from None
        size = self.part.stat().st_size
        if size < self.product.size_bytes:
            raise TransientDownloadError(f"{self.product.name}: connection ended at byte {size} of "
                                         f"{self.product.size_bytes}")

    def _verify_and_publish(self) -> None:
        size = self.part.stat().st_size
        digest = file_md5(self.part)
        if size != self.product.size_bytes or digest != self.product.md5:
            self.part.unlink()
            self.on_progress(0)
            raise TransientDownloadError(f"{self.product.name}: checksum mismatch (MD5 {digest}, catalogue "
                                         f"{self.product.md5}; {size} of {self.product.size_bytes} bytes): downloading "
                                         "again")
        check_safe_zip(self.part)
        os.replace(self.part, self.final)
        log.info("%s: verified (MD5 %s)", self.final.name, digest)

    def run(self) -> Path:
        if self.final.exists():
            if not self.settings.verify_existing:
                log.info("%s: present, skipped", self.final.name)
                return self.final
            if self.final.stat().st_size == self.product.size_bytes and file_md5(self.final) == self.product.md5:
                log.info("%s: present and verified, skipped", self.final.name)
                return self.final
            log.warning("%s: present but its MD5 or size differs from the catalogue's; downloading again",
                        self.final.name)
            self.final.unlink()
        try:
            self.settings.retry.call("", self.attempt, (TransientDownloadError, TransientAuthError))
        except RetriesExhausted as exc:
            raise DownloadError(f"{exc}; a rerun resumes the partial file") from None
        return self.final


def download_products(products: list[ProductFile], out_dir: str | os.PathLike, tokens: TokenSource,
                      settings: TransferSettings, *, progress: bool = True, extra_space_bytes: int = 0,
                      session: requests.Session | None = None) -> list[Path]:
    """Download ``products`` into ``out_dir`` (at most ``settings.parallel`` at a time); the verified final paths."""
    out_dir = Path(out_dir)
    for product in products:
        if not product.md5 or product.size_bytes <= 0:
            raise DownloadError(f"{product.name}: the catalogue gives no MD5 checksum or size; cannot verify")
    check_free_space(out_dir, products, settings.free_space_margin_gb, extra_space_bytes)
    session = session or requests.Session()
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        def fetch(product: ProductFile) -> Path:
            task = bar.add_task(product.name[:40], total=product.size_bytes)
            return _Download(product, out_dir, tokens, settings, session,
                             lambda done: bar.update(task, completed=done)).run()

        with ThreadPoolExecutor(max_workers=max(1, min(settings.parallel, len(products)))) as pool:
            return list(pool.map(fetch, products))

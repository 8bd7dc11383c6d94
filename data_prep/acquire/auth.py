"""CDSE credentials and access token, held in memory only and never shown.

Credentials come from ``CDSE_USERNAME``/``CDSE_PASSWORD`` or else from a
``.netrc`` entry for the token service's host; nothing is ever prompted for
and nothing is ever written. The password is hidden from ``repr``; error
messages name where the credentials came from, never their values. The
access token is refreshed with the refresh token, or obtained again with the
password, when the download service answers HTTP 401.
"""

from __future__ import annotations

import logging
import netrc
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

log = logging.getLogger(__name__)

USERNAME_VARIABLE = "CDSE_USERNAME"
PASSWORD_VARIABLE = "CDSE_PASSWORD"


class CredentialsError(RuntimeError):
    """Credentials are missing, unreadable or refused; the message never holds them."""


class TransientAuthError(RuntimeError):
    """The token service failed for a reason worth retrying (5xx, timeout, connection)."""


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)
    source: str = ""

    def secrets(self) -> tuple[str, ...]:
        return (self.password,)


def how_to_provide(token_url: str) -> str:
    host = urlparse(token_url).hostname or token_url
    return (f"set {USERNAME_VARIABLE} and {PASSWORD_VARIABLE} in the environment, or add "
            f"'machine {host} login <user> password <password>' to ~/.netrc (chmod 600); "
            "an account is free at https://dataspace.copernicus.eu")


def find_credentials(token_url: str, netrc_path: str | os.PathLike | None = "~/.netrc") -> Credentials | None:
    """Credentials from the environment, else from ``netrc_path`` (machine = the token URL's host); None if absent."""
    username, password = os.environ.get(USERNAME_VARIABLE, ""), os.environ.get(PASSWORD_VARIABLE, "")
    if username and password:
        return Credentials(username, password, f"environment variables {USERNAME_VARIABLE}/{PASSWORD_VARIABLE}")
    if username or password:
        missing = PASSWORD_VARIABLE if username else USERNAME_VARIABLE
        raise CredentialsError(f"{missing} is not set while its partner is; set both (or neither, to use ~/.netrc)")
    if not netrc_path:
        return None
    path = Path(netrc_path).expanduser()
    if not path.is_file():
        return None
    try:
        entries = netrc.netrc(str(path))
    except netrc.NetrcParseError as exc:
        # The parser's own message may quote a token of the file: say only where.
        raise CredentialsError(f"{path}: cannot parse the .netrc file (line {exc.lineno})") from None
    host = urlparse(token_url).hostname or ""
    entry = entries.authenticators(host)
    if entry is None:
        return None
    login, _, password = entry
    if not login or not password:
        raise CredentialsError(f"{path}: the entry for machine {host} lacks a login or a password")
    return Credentials(login, password, f"{path} (machine {host})")


class TokenSource:
    """An OpenID Connect access token for CDSE, shared by download threads and renewed on demand."""

    def __init__(self, credentials: Credentials, token_url: str, *, client_id: str = "cdse-public",
                 timeout_s: float = 60.0, session: requests.Session | None = None):
        self._credentials = credentials
        self._token_url = token_url
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._access: str | None = None
        self._refresh: str | None = None

    def __repr__(self) -> str:
        return f"TokenSource(token_url={self._token_url!r}, credentials from {self._credentials.source})"

    def secrets(self) -> tuple[str, ...]:
        """Every secret this object holds (for log redaction)."""
        return tuple(s for s in (self._credentials.password, self._access, self._refresh) if s)

    def _request(self, form: dict, what: str) -> dict:
        try:
            response = self._session.post(self._token_url, data=form, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise TransientAuthError(f"token service {self._token_url}: {what} failed ({type(exc).__name__})") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientAuthError(f"token service {self._token_url}: {what} answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise CredentialsError(f"token service {self._token_url} refused the {what} (HTTP {response.status_code}); "
                                   f"credentials from {self._credentials.source}")
        try:
            body = response.json()
            return {"access_token": str(body["access_token"]), "refresh_token": body.get("refresh_token")}
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"token service {self._token_url}: answer without access_token") from None

    def _login(self) -> None:
        body = self._request({"client_id": self._client_id, "grant_type": "password",
                              "username": self._credentials.username, "password": self._credentials.password},
                             "username/password")
        self._access, self._refresh = body["access_token"], body["refresh_token"]

    def token(self) -> str:
        with self._lock:
            if self._access is None:
                self._login()
            return self._access

    def renew(self, stale: str) -> str:
        """A new token after ``stale`` was refused: refresh, else log in again (once per stale token across threads)."""
        with self._lock:
            if self._access is not None and self._access != stale:
                return self._access  # another thread renewed it already
            if self._refresh:
                try:
                    body = self._request({"client_id": self._client_id, "grant_type": "refresh_token",
                                          "refresh_token": self._refresh}, "token refresh")
                    self._access, self._refresh = body["access_token"], body["refresh_token"] or self._refresh
                    log.info("access token refreshed")
                    return self._access
                except CredentialsError:
                    log.info("refresh token refused; logging in again")
            self._login()
            return self._access


class RedactingFilter(logging.Filter):
    """Replaces every secret of a source (password, tokens) in log records by ``***``."""

    def __init__(self, *sources):
        super().__init__()
        self._sources = sources

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = [s for source in self._sources for s in source.secrets() if s]
        if not secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

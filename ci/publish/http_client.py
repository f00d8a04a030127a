"""The HTTPS client of `download` and the release guard: GET with bounded size and time,
https only (plain http to loopback for the tests' servers), the GitHub token only to the API
host and never across a redirect, and every failure one DownloadError naming the URL."""

from __future__ import annotations

import http.client
import ipaddress
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from ..errors import NetworkError


class DownloadError(NetworkError):
    """A clean, one-message failure (non-zero exit); status: the HTTP status, if one came."""

    status: int | None = None


def github_api() -> str:
    return os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")


def token() -> str | None:
    return os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN")


MAX_BYTES = 1 << 30  # per response, and all wheels unpacked from one artifact: far above anything of ours
DEADLINE_S = 600.0  # per response, whole transfer: a server dripping bytes cannot hold us forever
CHUNK = 1 << 16


def shown(text: object) -> str:
    """A server-supplied string as it may be printed: control and other non-printable characters
    (terminal escapes, newlines that would forge output lines, bidi overrides) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def is_loopback(host: str | None) -> bool:
    """Decided from the address (an IP literal in 127.0.0.0/8 or ::1), or the reserved name localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_url(url: str) -> None:
    """https only; plain http only to a loopback address (the tests' fake servers)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
        raise DownloadError(f"download: refusing {shown(url)}: only https (or http to loopback) is allowed")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (GitHub sends every asset and artifact to a storage host), but only to
    allowed URLs, and never carry the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects)


def fetch(url: str, accept: str | None = None, auth: bool = False, limit: int | None = None) -> tuple[bytes, str]:
    """GET url -> (body, content type); any failure, a body over limit (default MAX_BYTES) bytes or a
    transfer over DEADLINE_S seconds becomes a DownloadError naming the URL. The token goes only to
    the GitHub API host, and never across a redirect to another host."""
    check_url(url)
    headers = {"User-Agent": "torch-segment-ops-ci"}
    if accept:
        headers["Accept"] = accept
    api_host = urllib.parse.urlsplit(github_api()).netloc
    if auth and token() and urllib.parse.urlsplit(url).netloc == api_host:
        headers["Authorization"] = f"Bearer {token()}"
    limit = MAX_BYTES if limit is None else limit
    deadline = time.monotonic() + DEADLINE_S
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=60) as response:
            content_type = response.headers.get("Content-Type", "")
            body = bytearray()
            announced = response.headers.get("Content-Length")
            while chunk := response.read1(CHUNK):  # what has arrived: the deadline is checked as bytes drip
                body += chunk
                if len(body) > limit:
                    raise DownloadError(f"download: {shown(url)} sent more than {limit} bytes; stopped")
                if time.monotonic() > deadline:
                    raise DownloadError(f"download: {shown(url)} took longer than {DEADLINE_S:.0f} s; stopped")
    except urllib.error.HTTPError as error:
        hint = " (set GH_TOKEN for private repositories and Actions artifacts)" if error.code in (401, 403, 404) else ""
        failure = DownloadError(f"download: {shown(url)} answered HTTP {error.code} {shown(error.reason)}{hint}")
        failure.status = error.code
        raise failure from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"download: could not reach {shown(url)}: {shown(reason)}") from None
    if announced is not None and announced.strip() != str(len(body)):  # a cut-short body is no answer
        raise DownloadError(f"download: {shown(url)} sent {len(body)} bytes but announced {shown(announced)}; "
                            "the transfer was cut short")
    return bytes(body), content_type

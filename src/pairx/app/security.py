"""What stands between the review app and the network: hosts, tokens, CSRF, headers.

* **Host header**: only the names the server was started for (plus loopback names) are served,
  so a DNS-rebinding page cannot talk to a local server. The header must be exactly
  ``host[:port]`` (a DNS name, an IPv4 address or a bracketed IPv6 address; a port in
  1-65535): ``127.0.0.1:8000@evil.com`` or ``127.0.0.1:8000, evil.com`` are refused.
* **Reviewers**: when the project has reviewers (``pairx review users add``), every request
  needs a valid token (cookie, set by ``/login?token=...``); a server on a non-loopback host
  refuses to start without reviewers (:func:`check_bind`).
* **CSRF**: every POST carries ``X-CSRF-Token``, an HMAC of the browser's session cookie
  under the project's secret; a missing or wrong token, or a foreign ``Origin``, is refused.
* **Headers**: a strict Content-Security-Policy (scripts and styles from the app only, images
  from the app and ``data:`` URIs of its own heatmaps), no framing, no sniffing, no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from urllib.parse import urlsplit

__all__ = ["CSP", "LOOPBACK_NAMES", "SECURITY_HEADERS", "SESSION_COOKIE", "TOKEN_COOKIE",
           "check_bind", "csrf_ok", "csrf_token", "host_allowed", "host_name", "is_loopback",
           "new_session", "origin_allowed"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SESSION_COOKIE = "pairx_session"
TOKEN_COOKIE = "pairx_token"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, has_reviewers: bool) -> None:
    """Refuse to serve on a non-loopback host without reviewer tokens.

    Raises
    ------
    PermissionError
        With the command that adds a reviewer.
    """
    if not is_loopback(host) and not has_reviewers:
        raise PermissionError(
            f"refusing to serve on {host}: anyone on the network could record decisions. Add "
            f"a reviewer first ('pairx review users add PROJ NAME') or bind to 127.0.0.1")


_HOST_HEADER = re.compile(
    r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?))"
    r"(?::(?P<port>[0-9]{1,5}))?", re.ASCII)


def host_name(header: str | None) -> str | None:
    """The host of a ``Host`` header that is exactly ``host[:port]``, lower-case (an IPv6
    address in brackets); ``None`` for anything else (userinfo, lists, spaces, a port outside
    1-65535, an invalid IPv6 address)."""
    if not header:
        return None
    m = _HOST_HEADER.fullmatch(header.lower())
    if m is None:
        return None
    port = m.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    if m.group("v6") is not None:
        try:
            ipaddress.IPv6Address(m.group("v6"))
        except ValueError:
            return None
        return f"[{m.group('v6')}]"
    return m.group("name")


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's ``Host`` header is exactly ``host[:port]`` and names this server."""
    name = host_name(header)
    return name is not None and name in allowed


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """A POST's ``Origin`` (when the browser sends one) must be this server itself."""
    if not origin:
        return True
    if origin == "null" or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.strip().lower()


def new_session() -> str:
    """A new random browser session id (the session cookie's value)."""
    return secrets.token_urlsafe(24)


def csrf_token(secret: str, session: str) -> str:
    """The CSRF token of one browser session (HMAC-SHA256 of the session id)."""
    return hmac.new(secret.encode(), session.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, session: str | None, token: str | None) -> bool:
    """Whether ``token`` is the CSRF token of ``session`` (constant-time comparison)."""
    if not session or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, session), token)

"""CSRF protection of the dashboard's changes: a per-session token, double-submitted and bound to the user.

Rules this file governs:
- A browser session is a random id in the ``balancier_session`` cookie (``SameSite=Strict``, ``HttpOnly``,
  ``Path=/``), set by the page when missing. A cross-site request never carries a SameSite=Strict cookie.
- The token the page embeds (hidden form field ``csrf``, or ``X-CSRF-Token`` header from the script) is
  HMAC-SHA256(server secret, session id + user): it cannot be forged without the secret, and another
  user's token (same browser, other credentials) does not match.
- Every POST to the dashboard's routes must carry the cookie and the matching token, else 403. Tokens are
  compared in constant time.
- The JSON API (``/api/...``) is used by programs with a token; a browser holding Basic credentials must not
  be made to call it from another site: a change whose ``Origin`` differs from the request's host, or whose
  ``Sec-Fetch-Site`` is ``cross-site``/``same-site``, is refused with 403.

Public API:
    COOKIE; new_session() -> str; token_for(secret, session, user) -> str
    check(secret, session, user, token) -> bool; cross_site(headers, host) -> str | None
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

COOKIE = "balancier_session"
HEADER = "X-CSRF-Token"
FIELD = "csrf"


def new_session() -> str:
    return secrets.token_urlsafe(24)


def token_for(secret: bytes, session: str, user: str) -> str:
    return hmac.new(secret, f"{session}\0{user}".encode(), hashlib.sha256).hexdigest()


def check(secret: bytes, session: str | None, user: str, token: str | None) -> bool:
    if not session or not token:
        return False
    return hmac.compare_digest(token_for(secret, session, user).encode(), token.encode())


def cross_site(headers: Mapping[str, str], host: str | None) -> str | None:
    """Why a state-changing request comes from another site, or None when it does not (or is not a browser's)."""
    fetch_site = headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"a {fetch_site} request may not change anything"
    origin = headers.get("Origin")
    if origin and origin != "null":
        if urlsplit(origin).netloc.lower() != (host or "").lower():
            return f"origin {origin} is not this dashboard's"
    elif origin == "null":
        return "a request from an opaque origin may not change anything"
    return None

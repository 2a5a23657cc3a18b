"""The one exception of the HTTP/1.1 engine.

Rules:
- Every protocol error carries the status code the proxy must send (HAProxy's codes: 400 for a bad request,
  414/431 for an oversized request head, 422 for a transfer coding we do not support, 502 for a bad response,
  500 for a header we could not serialise) and a reason meant for logs, never for the client: the client gets
  the error page of ``status`` (``pages.py``).
- After an ``HttpError`` the connection's framing is unknown, so the caller closes the connection.
"""

from __future__ import annotations


class HttpError(Exception):
    """A message that must not be forwarded; ``status`` is what to answer, ``reason`` what to log."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"HttpError({self.status}, {self.reason!r})"

"""Sans-IO HTTP/1.1: bytes in, heads and body boundaries out; no sockets, no event loop.

The data plane calls exactly what is exported here. Each module states the rules it governs:
``heads`` (parsing, validation, framing decisions), ``body`` (body boundaries), ``serialize`` (writing heads,
hop-by-hop fields), ``pages`` (HAProxy's error pages), ``errors`` (the exception carrying the status to send).
"""

from .body import BodyFramer
from .errors import HttpError
from .heads import MAX_HEADERS, Framing, RequestHead, ResponseHead, parse_request_head, parse_response_head
from .pages import ERROR_STATUSES, error_response
from .serialize import build_request_head, build_response_head, strip_hop_by_hop

__all__ = [
    "BodyFramer",
    "ERROR_STATUSES",
    "Framing",
    "HttpError",
    "MAX_HEADERS",
    "RequestHead",
    "ResponseHead",
    "build_request_head",
    "build_response_head",
    "error_response",
    "parse_request_head",
    "parse_response_head",
    "strip_hop_by_hop",
]

"""What the review app accepts from a client before any route sees it: body size, JSON depth, ids.

* **Body size** (:class:`BodyLimit`, an ASGI middleware): a request whose ``Content-Length``
  exceeds the limit, or whose streamed body grows past it, is answered ``413`` with a JSON
  reason before anything parses it (the body is read in chunks and counted; nothing beyond the
  limit is kept in memory).
* **JSON depth** (:func:`json_depth`): counted without recursion, so a body nested 100,000
  deep is refused with a 400 instead of reaching Python's recursion limit.
* **Ids** (:func:`parse_id`): an id in a path or a query string is ASCII digits within SQLite's
  integer range; anything else (``'²'``, ``'1e3'``, 20 digits) is no id at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

__all__ = ["MAX_BODY_BYTES", "MAX_ID", "MAX_JSON_DEPTH", "BodyLimit", "json_depth",
           "parse_id"]

MAX_BODY_BYTES = 1 << 20
"""The default request-body limit (1 MiB): a decision with its notes is a few hundred bytes."""
MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a JSON body may have."""
MAX_ID = (1 << 63) - 1
"""The largest integer SQLite stores (ids above it are no ids)."""

_ID = re.compile(r"[0-9]{1,19}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def parse_id(text: str | None) -> int | None:
    """``text`` as a database id: ASCII digits only, at most :data:`MAX_ID`; else ``None``.

    ``str.isdigit`` is not enough: it accepts ``'²'`` and other Unicode digits that ``int``
    refuses, and ``int`` accepts values SQLite cannot bind.
    """
    if text is None or not _ID.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def json_depth(body: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, counted without recursion
    (brackets inside strings do not count)."""
    if not body:
        return 0
    bare = _JSON_STRING.sub(b'""', body)
    codes = np.frombuffer(bare, np.uint8)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(codes, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(steps).max(initial=0))


def _error_message(status: int, message: str) -> tuple[Message, Message]:
    body = json.dumps({"error": message}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` (413) before it is parsed.

    Parameters
    ----------
    app
        The application it wraps.
    max_bytes
        The largest body accepted, in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def refuse(self, send: Send, status: int, message: str) -> None:
        """Answer ``status`` with ``{"error": message}``."""
        for part in _error_message(status, message):
            await send(part)

    def too_large(self) -> str:
        """The 413's reason."""
        return (f"the request body exceeds the limit of {self.max_bytes} bytes; send less "
                "(notes and tags are short texts)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            size = parse_id(declared.decode("latin-1").strip())
            if size is None:
                await self.refuse(send, 400, "Content-Length must be a non-negative integer")
                return
            if size > self.max_bytes:
                await self.refuse(send, 413, self.too_large())
                return
        chunks: list[bytes] = []
        total = 0
        while True:  # a streamed body (no or a false Content-Length) is counted as it comes
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = bytes(message.get("body", b""))
            total += len(chunk)
            if total > self.max_bytes:
                await self.refuse(send, 413, self.too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

"""Images and cached explanations, by id and by content key, revalidated with ETags.

``/img/{id}?side=160|480|1024`` is a JPEG thumbnail of an image of the project (by database
id, so no path of the file system can be asked for); ``/expl/{key}.jpg|json`` is a cached
explanation's figure or interactive data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from pairx.app.limits import parse_id
from pairx.app.routes.bodies import BadRequest
from pairx.app.routes.common import State, not_found
from pairx.app.store import image_row

__all__ = ["THUMB_SIDES", "router"]

THUMB_SIDES = (160, 480, 1024)
"""The thumbnail sizes served (longest side, pixels)."""

router = APIRouter()


@router.get("/img/{image}")
def image_file(request: Request, st: State, image: str, side: str = "480") -> Any:
    """Image ``image`` (database id) as a JPEG of at most ``side`` pixels (ETag: file hash).

    An id that is not ASCII digits within SQLite's range is a 404; ``side`` not an integer
    is a 400, an integer not in :data:`THUMB_SIDES` a 404."""
    image_id, size = parse_id(image), parse_id(side)
    if size is None:
        raise BadRequest(f"side: must be one of {', '.join(map(str, THUMB_SIDES))}")
    if image_id is None or size not in THUMB_SIDES:
        return not_found()
    row = image_row(st.db(), image_id)
    if row is None or row["status"] == "missing":
        return not_found("no such image")
    etag = f'"{row["sha256"][:32]}-{size}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    try:
        data = st.thumbs.get(row, size)
    except (OSError, ValueError) as exc:
        return PlainTextResponse(f"image {row['image_id']} cannot be decoded: {exc}",
                                 status_code=415)
    return Response(data, media_type="image/jpeg",
                    headers={"ETag": etag, "Cache-Control": "private, no-cache"})


@router.get("/expl/{name}")
def explanation_file(request: Request, st: State, name: str) -> Any:
    """A cached explanation file ``<key>.jpg`` or ``<key>.json`` (ETag: the key)."""
    key, _, ext = name.partition(".")
    if ext not in ("jpg", "json"):
        return not_found()
    etag = f'"{key}"'
    if request.headers.get("if-none-match") == etag and st.cache.has(key, ext):
        return Response(status_code=304, headers={"ETag": etag})
    data = st.cache.read(key, ext)
    if data is None:
        return not_found("not cached")
    return Response(data, media_type="image/jpeg" if ext == "jpg" else "application/json",
                    headers={"ETag": etag, "Cache-Control": "private, no-cache"})

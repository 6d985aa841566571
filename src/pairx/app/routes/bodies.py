"""The JSON bodies the review app accepts, as typed models, and the one way a route reads them.

Every body is checked by :func:`parse_body`: a JSON object no deeper than
:data:`~pairx.app.limits.MAX_JSON_DEPTH`, then a pydantic model in strict mode: ids are JSON
integers within SQLite's range (``1.9``, ``"1"``, ``true`` and ``10**30`` are refused, not
coerced), lists are lists (``"abc"`` is not three tags), texts are texts. A refusal is a
:class:`BadRequest` whose message names the field and the problem (``query: must be an
integer``), answered as a 400 ``{"error": ...}``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pairx.app.limits import MAX_ID, MAX_JSON_DEPTH, json_depth

__all__ = ["BadRequest", "DecideBody", "ExplainBody", "Id", "UndoBody", "describe_errors",
           "parse_body"]

Id = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
"""A database id in a body: a JSON integer in ``[0, 2**63 - 1]``."""
Text = Annotated[str, Field(strict=True)]

Body = TypeVar("Body", bound=BaseModel)

_PROBLEMS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "greater_than_equal": f"must be an integer in [0, {MAX_ID}]",
    "less_than_equal": f"must be an integer in [0, {MAX_ID}]",
    "missing": "is required",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


class BadRequest(Exception):
    """A request the app refuses with a 400 ``{"error": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class DecideBody(_Body):
    """``/api/decide``: a decision on one candidate of one query."""

    query: Id
    candidate: Id
    decision: Text
    confidence: float | None = None
    tags: list[Text] = Field(default_factory=list)
    notes: Text = ""
    explanation: Text | None = None

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, value: Any) -> float | None:
        """A number in ``[0, 1]``, or the page's text box as sent (``""``: none)."""
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("must be a number in [0, 1] or empty")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"must be a number in [0, 1] or empty; got {value!r}") from None
        if not (math.isfinite(number) and 0.0 <= number <= 1.0):
            raise ValueError(f"must lie in [0, 1]; got {value!r}")
        return number


class UndoBody(_Body):
    """``/api/undo``: retract the latest decision (within ``query`` when given)."""

    query: Id | None = None


class ExplainBody(_Body):
    """``/api/explain``: queue the explanations of a query's candidates at one layer."""

    query: Id
    layer: Text | None = None
    candidates: list[Id] | None = None
    prefetch: bool = True


def describe_errors(exc: ValidationError) -> str:
    """One line naming each refused field and its problem (``query: must be an integer``)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        where = loc.lstrip(".") or "body"
        if err["type"] == "value_error":
            problem = str(err.get("ctx", {}).get("error", err["msg"]))
        else:
            problem = _PROBLEMS.get(err["type"], err["msg"].lower())
        parts.append(f"{where}: {problem}")
    return "; ".join(parts)


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as ``model``.

    Raises
    ------
    BadRequest
        Not JSON, not an object, nested too deep, or a field of the wrong type or range.
    """
    raw = await request.body()
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequest("body: not valid JSON; send a JSON object") from None
        raise BadRequest(describe_errors(exc)) from None

"""A route's ordinary requests served without FastAPI's parameter machinery.

``POST /v1/jobs`` is the service's hottest route. Measured on the 2-CPU machine
(in-process ASGI calls, 64 at once): of a submit's ~120 µs in the app, FastAPI's
request handler took ~45 µs — dependency solving for the body and the
``Idempotency-Key`` header (~35 µs), plus parsing the content type with
``email.message`` on every request — against ~35 µs for the submit itself.

``fast_route`` keeps the route as FastAPI declared it (the OpenAPI schema, the
metrics' route label, the exception handlers) and puts a handler in front that
takes only the common request: a JSON body that ``json.loads`` decodes and the
body model accepts, as FastAPI would decode and validate it. Anything else (no
or another content type, a body that is not JSON or does not validate, a header
the fast handler does not read, an app with a token) goes to FastAPI's own
handler with the same request, so every refusal is FastAPI's answer, byte for
byte (``tests/server/test_fast_route.py`` compares both on hostile bodies).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute, request_response
from pydantic import BaseModel
from starlette.types import Message

__all__ = ["fast_route"]

M = TypeVar("M", bound=BaseModel)

# The content types taken as they come; FastAPI's handler takes the others it
# accepts (application/*+json, odd spacing and casing) and refuses the rest.
_JSON_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})


def fast_route(
    app: FastAPI,
    path: str,
    method: str,
    model: type[M],
    handle: Callable[[M], Awaitable[Response]],
    *,
    headers_read_by_fastapi: Collection[str] = (),
) -> None:
    """Serve ``method path``'s ordinary requests with ``handle(model instance)``.

    ``headers_read_by_fastapi``: header names (lower case) the route declares as
    parameters; a request carrying one goes to FastAPI's handler, which reads it.
    """
    route = _route(app, path, method)
    if getattr(route, "max_body_size", None) is not None:
        return  # FastAPI wraps such a route in its own body limit: keep its handling whole
    declared = route.get_route_handler()  # FastAPI's own: dependencies, validation
    skip = frozenset(name.encode("latin-1") for name in headers_read_by_fastapi)

    async def fast(request: Request) -> Response:
        if app.state.token is not None or not _plain_json(request, skip):
            return await declared(request)
        try:
            raw = await request.body()  # kept on the request: FastAPI's handler reads it again
        except Exception as exc:  # the client gone mid-body, a body over the limit
            return await declared(_read_failing(request, exc))  # FastAPI's answer to it
        try:
            body = model.model_validate(json.loads(raw))  # starlette's request.json()
        except Exception:  # not JSON, too deep (RecursionError), not the model: FastAPI answers
            return await declared(request)
        return await handle(body)

    route.app = request_response(fast)


def _read_failing(request: Request, error: Exception) -> Request:
    """``request`` once more, for FastAPI's handler: reading its body raises ``error`` again.

    The body cannot be read twice; FastAPI's handler answers the error as it
    would have met it (``ClientDisconnect`` and others: 400; an ``HTTPException``
    such as ``BodySizeLimit``'s 413: that exception).
    """

    async def receive() -> Message:
        raise error

    return Request(request.scope, receive)


def _route(app: FastAPI, path: str, method: str) -> APIRoute:
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")


def _plain_json(request: Request, skip: frozenset[bytes]) -> bool:
    content_type = None
    for name, value in request.scope["headers"]:
        if name in skip:
            return False
        if name == b"content-type":
            if content_type is not None:
                return False  # twice: FastAPI's handler decides
            content_type = value
    return content_type is not None and content_type.decode("latin-1").lower() in _JSON_TYPES

"""Bearer-token authentication, and the request-size limit, for the job server."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TOKEN_COOKIE", "BodySizeLimit", "require_token"]

TOKEN_COOKIE = "ambidex_token"


def _presented(request: Request) -> tuple[str | None, bool]:
    """The token a request carries, and whether it came from the cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip(), False
    return request.cookies.get(TOKEN_COOKIE), True


async def require_token(request: Request) -> None:
    """A FastAPI dependency: 401 unless the app has no token or the request carries it.

    It is ``async`` because it does no I/O: a plain function would cost every
    request a hop through a worker thread.

    The token is accepted as ``Authorization: Bearer <token>`` or, for the
    dashboard in a browser, as the cookie set by visiting ``/?token=<token>``.
    A write (anything but GET and HEAD) authenticated by the cookie must also
    carry an ``X-Requested-With`` header, which a plain HTML form on another
    site (or another port of this host) cannot send: 403 otherwise.
    """
    expected: str | None = request.app.state.token
    if expected is None:
        return
    got, from_cookie = _presented(request)
    if got is None or not hmac.compare_digest(got.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if (
        from_cookie
        and request.method not in ("GET", "HEAD")
        and not request.headers.get("x-requested-with")
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="a write authenticated by the dashboard cookie needs an X-Requested-With "
            "header; API clients should send 'Authorization: Bearer <token>'",
        )


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413, never read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException passes through FastAPI's body reading as is
                    # (any other error there becomes a 400).
                    raise HTTPException(
                        413,
                        detail=f"request body too large: at most {self.max_bytes} bytes",
                    )
            return message

        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, sending)
        except HTTPException as exc:
            # Normally answered inside the app; this catches a body read outside it.
            if exc.status_code != 413 or started:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = (
            b'{"detail":"request body too large: at most '
            + str(self.max_bytes).encode()
            + b' bytes"}'
        )
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

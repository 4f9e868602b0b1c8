"""A request body past the served package's ``max_body_mb``, refused (413) before it is read.

MLflow's scoring server reads and parses a whole body before the model sees any of it (a 108 MB
one took 40 s and 2.5 GB to reach the row limit), and neither it nor uvicorn has a body limit.
uvicorn does take its HTTP protocol class by import path, from ``--http`` or ``UVICORN_HTTP``, and
``mlflow models serve`` hands its environment to the uvicorn it starts, so
``UVICORN_HTTP=kronos_exp.forecasting.body_limit:BodyLimitedH11 mlflow models serve ...`` puts
BodyLimit in front of MLflow's app (where MLflow serves with uvicorn, as 3.x does; the h11 protocol,
whether or not httptools is installed).
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from uvicorn.protocols.http.h11_impl import H11Protocol

from .requests import Limits, Served

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _refuse(send: Send, size: str, limits: Limits, close: bool) -> None:
    body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED",
                       "message": f"the request body is {size} MB; this model takes at most {limits.max_body_mb:g} "
                                  "MB (serving.max_body_mb): send fewer rows"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413,
                "headers": headers + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a body whose Content-Length is past the limit is refused unread (uvicorn then
    discards it as it arrives); one sent in chunks is read up to the limit, then refused and its
    connection closed (its end is unknown). A body within the limit reaches the app as it came."""

    def __init__(self, app: Callable[[Message, Receive, Send], Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        limits = Served.limits
        if scope["type"] != "http" or limits is None:  # not the served model's process
            return await self.app(scope, receive, send)
        limit = int(limits.max_body_mb * 1e6)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:  # h11 delivers exactly this many bytes, never more
            if declared.isdigit() and int(declared) > limit:
                return await _refuse(send, f"{int(declared) / 1e6:.1f}", limits, close=False)
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while not messages or messages[-1].get("more_body", False):
            messages.append(await receive())
            size += len(messages[-1].get("body", b""))
            if size > limit:
                return await _refuse(send, f"over {limits.max_body_mb:g}", limits, close=True)
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()
        await self.app(scope, replay, send)


class BodyLimitedH11(H11Protocol):
    """uvicorn's h11 protocol serving BodyLimit(app): what ``UVICORN_HTTP`` names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = BodyLimit(self.app)

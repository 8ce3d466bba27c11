"""A pure ASGI middleware that bounds request bodies: their size (413, before reading them all), the time to
receive one (408: a client that declares a body and then stalls does not hold memory and a socket for ever), and
the bytes of all bodies being received at once (503 with Retry-After)."""
from __future__ import annotations

import asyncio
import json
import time


class BodyLimit:
    """Refuse request bodies over `max_bytes` (at once from Content-Length, or while streaming), bodies not
    received within `timeout_s`, and bodies that would take the bytes in flight over `max_inflight`."""

    def __init__(self, app, max_bytes: int, timeout_s: float = 30.0, max_inflight: int | None = None) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.max_inflight = max_inflight if max_inflight is not None else 8 * max_bytes
        self.inflight = 0  # bytes of request bodies received and not yet answered, over every request

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send, 413, f"the request body is larger than --max-body-mb "
                                                 f"({self.max_bytes / 2**20:g} MB)")
        seen, deadline, done = 0, time.monotonic() + self.timeout_s, False

        async def counted():
            nonlocal seen, done
            if done:  # the body is in: later receives wait for the client to go (not bounded by the deadline)
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise _Refused(408, f"the request body did not arrive within --timeout-s ({self.timeout_s:g} s)") \
                    from None
            chunk = len(message.get("body", b""))
            seen += chunk
            self.inflight += chunk
            if seen > self.max_bytes:
                raise _Refused(413, f"the request body is larger than --max-body-mb ({self.max_bytes / 2**20:g} MB)")
            if self.inflight > self.max_inflight:
                raise _Refused(503, "too many request bodies are arriving at once; retry shortly")
            done = message.get("type") != "http.request" or not message.get("more_body", False)
            return message

        try:
            await self.app(scope, counted, send)
        except _Refused as e:
            await self._refuse(send, e.status, str(e))
        finally:
            self.inflight -= seen

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

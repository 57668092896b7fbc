"""ASGI middleware of the prediction service (model/serving/service.py): a body size limit
(413) and an optional API key (401). Both answer before the application reads anything.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse


class BodyLimit:
    """ASGI middleware that refuses request bodies over `max_bytes` with 413.

    A declared `Content-Length` over the limit is refused before anything is read; a
    body without one (`Transfer-Encoding: chunked`) is counted while it is read, and
    what was read is handed on to the application unchanged.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                return await self._too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away; the application sees that too
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed():
            return next(replay, None) or await receive()

        return await self.app(scope, replayed, send)

    async def _too_large(self, scope, receive, send):
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"},
                                status_code=413)
        await response(scope, receive, send)


class ApiKey:
    """ASGI middleware that lets through only requests carrying the service's key.

    Open without it: /health (for load balancers and monitors) and the web UI's own files,
    / and /web/* (so a browser can load the web UI, which then asks for the key). Anything
    else, the data endpoints, /openapi.json, /docs and unknown paths alike, is a 401: an
    endpoint added later is closed unless it is named here.
    """

    OPEN = ("/health", "/")

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    def allowed(self, scope) -> bool:
        path = scope.get("path", "")
        if path in self.OPEN or path.startswith("/web/"):
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key")
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if given is None and scheme.lower() == b"bearer":
            given = token.strip()
        # Constant-time comparison: the time taken says nothing about how much matched.
        return given is not None and hmac.compare_digest(given, self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.allowed(scope):
            return await self.app(scope, receive, send)
        response = JSONResponse(
            {"detail": "this service needs an API key: send 'Authorization: Bearer KEY' or "
                       "'X-API-Key: KEY'"}, status_code=401,
            headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

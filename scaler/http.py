"""/metrics, /healthz, /readyz and the status page on a tiny asyncio HTTP/1.1 server (Connection: close)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from .status_page import StatusPage

log = logging.getLogger(__name__)
Response = tuple[int, str, bytes, tuple[tuple[str, str], ...]]
_MAX_HEADER = 16 * 1024
_READ_TIMEOUT = 10.0


class HttpEndpoints:
    def __init__(
        self, registry: CollectorRegistry, ready: Callable[[], bool], status: StatusPage | None = None
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.status = status  # None: `status_page: false`, and /status is not found
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, host, port, limit=_MAX_HEADER)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def route(self, target: str) -> Response:
        path, _, query = target.partition("?")
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), ()
        if path in ("/healthz", "/livez"):
            # Liveness is this process answering, never a source: a dead broker must not get us restarted.
            return 200, "text/plain", b"ok\n", ()
        if path == "/readyz":
            ready = self.ready()
            return (200 if ready else 503), "text/plain", b"ready\n" if ready else b"shutting down\n", ()
        if self.status is not None and path == "/status":
            return 200, "text/html; charset=utf-8", *self.status.html()
        if self.status is not None and path == "/status.json":
            return 200, "application/json", *self.status.json(query)
        return 404, "text/plain", b"not found; try /metrics, /healthz or /readyz\n", ()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            response: Response
            if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                response = 405, "text/plain", b"only GET\n", ()
            else:
                response = self.route(parts[1])
            status, ctype, body, headers = response
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
            header = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"{extra}Connection: close\r\n\r\n"
            ).encode()
            writer.write(header if parts[0] == "HEAD" else header + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that went away or sent garbage gets nothing; the server goes on
        except Exception:
            log.exception("HTTP request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

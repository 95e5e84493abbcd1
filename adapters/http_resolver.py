"""The aiohttp resolver of one pooled HTTP client: it knows one host and the addresses approved for it.

Imported only where an HTTP client is created (importing aiohttp is slow; see adapters/http.py).
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from .resolve import idna_host


class PinnedResolver(AbstractResolver):
    """Answers for its own host with the addresses the client was created for, and for no other host.

    aiohttp asks it at every new connection; it never performs a lookup, so a connection goes only to an
    address the engine's hook returned (and the egress policy approved) when the client was created.
    """

    def __init__(self, host: str, addresses: tuple[str, ...]) -> None:
        self.host = idna_host(host)
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if idna_host(host) != self.host:
            # Redirects are off and every request of a client goes to its own origin: this is a bug, refuse.
            raise OSError(f"this HTTP client connects to {self.host} only, not to {host}")
        results: list[ResolveResult] = []
        for address in self.addresses:
            ip = ipaddress.ip_address(address)
            address_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, address_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=address_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(f"no approved address for {host}")
        return results

    async def close(self) -> None:
        """Nothing to close: no resolver behind it."""
